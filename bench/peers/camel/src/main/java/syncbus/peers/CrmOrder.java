package syncbus.peers;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;
import java.math.BigDecimal;
import java.util.List;

/** A CRM order as it arrives (JSON); numbers bind to BigDecimal, so they are exact. */
@JsonIgnoreProperties(ignoreUnknown = true)
public class CrmOrder {
    @JsonProperty("order_id") public String orderId;
    @JsonProperty("status") public String status;
    @JsonProperty("created_at") public String createdAt;
    @JsonProperty("cust_code") public String custCode;
    @JsonProperty("customer") public Customer customer;
    @JsonProperty("amount") public BigDecimal amount;
    @JsonProperty("currency") public String currency;
    @JsonProperty("region") public String region;
    @JsonProperty("lines") public List<Line> lines;

    @JsonIgnoreProperties(ignoreUnknown = true)
    public static class Customer {
        @JsonProperty("name") public String name;
        @JsonProperty("phone") public String phone;
    }

    @JsonIgnoreProperties(ignoreUnknown = true)
    public static class Line {
        @JsonProperty("line_no") public Integer lineNo;
        @JsonProperty("sku") public String sku;
        @JsonProperty("qty") public BigDecimal qty;
        @JsonProperty("uom") public String uom;
        @JsonProperty("unit_price") public BigDecimal unitPrice;
    }
}
