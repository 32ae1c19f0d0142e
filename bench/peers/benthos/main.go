// A Benthos (Apache-2.0 core, github.com/redpanda-data/benthos/v4) binary for `make bench-peers`.
//
// Only the pure (processors, Bloblang) and io (stdin/stdout, http_server,
// http_client) component sets are compiled in: what the two configs in this
// directory use. Built by bench/peers/run.py into var/peers/benthos; nothing
// built here is committed.
//
// One Bloblang method is added the way Benthos users add what the core lacks,
// as a Go plugin: nfkc(), Unicode NFKC normalisation, which the reference
// mapping's normalize_company transform needs (full-width letters, digits,
// brackets and spaces in Chinese company names). Everything else of the
// mapping is plain Bloblang in mapping.blobl.
package main

import (
	"context"

	"golang.org/x/text/unicode/norm"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func init() {
	spec := bloblang.NewPluginSpec().
		Category("String Manipulation").
		Description("Unicode NFKC normalisation of a string (full-width forms to ASCII, compatibility characters folded).")
	if err := bloblang.RegisterMethodV2("nfkc", spec, func(*bloblang.ParsedParams) (bloblang.Method, error) {
		return bloblang.StringMethod(func(s string) (any, error) {
			return norm.NFKC.String(s), nil
		}), nil
	}); err != nil {
		panic(err)
	}
}

func main() {
	service.RunCLI(context.Background())
}
