package syncbus.peers;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.regex.Pattern;

/**
 * The reference mapping (mappings/crm-order-to-erp.yaml, XML target, no JSON Schemas)
 * as a plain Java bean: CRM order in, ORDERS05 out. Camel calls {@link #approved} for
 * the route's {@code when} filter and {@link #map} for the fields.
 */
public class OrderMapper {
    private static final Pattern INVISIBLE = Pattern.compile("[\\u200b\\u200c\\u200d\\u2060\\ufeff]");
    private static final Pattern SPACES = Pattern.compile("\\s+");

    public boolean approved(CrmOrder o) {
        return "APPROVED".equals(o.status);
    }

    public Orders05 map(CrmOrder o) {
        Orders05 out = new Orders05();
        Orders05.Idoc idoc = out.idoc;
        String date = o.createdAt == null ? null : yyyymmdd(o.createdAt);
        idoc.ediDc40.credat = date;

        Orders05.E1edk01 k01 = idoc.e1edk01;
        k01.vbeln = required(o.orderId, "order_id");
        k01.curcy = o.currency != null ? o.currency : "CNY";
        k01.netwr = decimal(required(o.amount, "amount"), 2);
        k01.vkorg = vkorg(o.region);
        k01.erdat = date;

        Orders05.E1edka1 ka1 = idoc.e1edka1;
        ka1.kunnr = zfill(required(o.custCode, "cust_code").strip().toUpperCase(Locale.ROOT), 10);
        if (o.customer != null) {
            ka1.name1 = o.customer.name == null ? null : normalizeCompany(o.customer.name);
            ka1.telf1 = o.customer.phone == null ? null : maskPhone(o.customer.phone);
        }

        if (o.lines != null) {
            List<Orders05.E1edp01> items = new ArrayList<>(o.lines.size());
            for (CrmOrder.Line line : o.lines) {
                Orders05.E1edp01 p = new Orders05.E1edp01();
                p.posex = line.lineNo == null ? null : zfill(line.lineNo.toString(), 6);
                p.menge = line.qty == null ? null : decimal(line.qty, 3);
                p.menee = line.uom != null ? line.uom : "EA";
                p.vprei = line.unitPrice == null ? null : decimal(line.unitPrice, 2);
                p.e1edp19.idtnr = required(line.sku, "lines[].sku").strip().toUpperCase(Locale.ROOT);
                items.add(p);
            }
            idoc.e1edp01 = items;
        }
        return out;
    }

    private static <T> T required(T value, String what) {
        if (value == null || (value instanceof String s && s.isEmpty())) {
            throw new IllegalArgumentException(what + " is required");
        }
        return value;
    }

    /** decimal(n): exactly n places, rounded half-up. */
    static String decimal(BigDecimal value, int places) {
        return value.setScale(places, RoundingMode.HALF_UP).toPlainString();
    }

    /** date('%Y%m%d') of an ISO 8601 date or date-time, as written. */
    static String yyyymmdd(String iso) {
        return iso.substring(0, 4) + iso.substring(5, 7) + iso.substring(8, 10);
    }

    static String vkorg(String region) {
        if (region == null) {
            return "9999";
        }
        return switch (region) {
            case "east" -> "1000";
            case "south" -> "2000";
            case "north" -> "3000";
            default -> "9999";
        };
    }

    static String zfill(String s, int width) {
        if (s.length() >= width) {
            return s;
        }
        return "0".repeat(width - s.length()) + s;
    }

    /** normalize_company: NFKC, zero-width characters out, whitespace collapsed, 有限责任公司 -> 有限公司. */
    static String normalizeCompany(String name) {
        String s = Normalizer.normalize(name, Normalizer.Form.NFKC);
        s = INVISIBLE.matcher(s).replaceAll("");
        s = SPACES.matcher(s).replaceAll(" ").strip();
        return s.replace("有限责任公司", "有限公司").replace("有限責任公司", "有限公司");
    }

    /** mask_phone for a phone number of digits: the first 3 and last 4 kept. */
    static String maskPhone(String phone) {
        int n = phone.length();
        if (n < 8) {
            return phone;
        }
        return phone.substring(0, 3) + "*".repeat(n - 7) + phone.substring(n - 4);
    }
}
