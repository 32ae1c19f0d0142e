package syncbus.peers;

import org.apache.camel.main.Main;

/**
 * {@code java -jar syncbus-peer-camel.jar stdin COUNT}: map COUNT JSON lines from stdin to stdout, then exit.
 * {@code java -jar syncbus-peer-camel.jar http PORT TARGET_URL}: serve POST /ingress/crm-orders on
 * 127.0.0.1:PORT and deliver each mapped order to TARGET_URL, until SIGTERM.
 */
public final class PeerMain {
    private PeerMain() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || !("stdin".equals(args[0]) || "http".equals(args[0]) && args.length == 3)) {
            System.err.println("usage: stdin COUNT | http PORT TARGET_URL");
            System.exit(2);
        }
        Main main = new Main();
        if ("stdin".equals(args[0])) {
            main.configure().addRoutesBuilder(new PeerRoutes("stdin", null));
            // stream:in does not end the application at end of input: stop after COUNT exchanges
            // (filtered ones count too), or after 30 s without any as a safety net.
            main.addInitialProperty("camel.main.durationMaxMessages", args[1]);
            main.addInitialProperty("camel.main.durationMaxIdleSeconds", "30");
        } else {
            String target = args[2];
            main.configure().addRoutesBuilder(new PeerRoutes("http", target));
            main.addInitialProperty("camel.server.enabled", "true");
            main.addInitialProperty("camel.server.host", "127.0.0.1");
            main.addInitialProperty("camel.server.port", args[1]);
        }
        main.addInitialProperty("camel.main.name", "syncbus-peer-camel");
        main.run();
    }
}
