package syncbus.peers;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import com.fasterxml.jackson.dataformat.xml.annotation.JacksonXmlElementWrapper;
import com.fasterxml.jackson.dataformat.xml.annotation.JacksonXmlProperty;
import com.fasterxml.jackson.dataformat.xml.annotation.JacksonXmlRootElement;
import java.util.List;

/**
 * The ORDERS05 IDoc as the ERP takes it, written by Jackson XML: attributes via
 * {@code isAttribute}, the item list as repeated {@code E1EDP01} elements, absent
 * (null) fields left out (the mapper is NON_NULL), element order fixed by
 * {@code @JsonPropertyOrder} as in mappings/crm-order-to-erp.yaml.
 */
@JacksonXmlRootElement(localName = "ORDERS05")
public class Orders05 {
    @JsonProperty("IDOC") public Idoc idoc = new Idoc();

    @JsonPropertyOrder({"BEGIN", "EDI_DC40", "E1EDK01", "E1EDKA1", "E1EDP01"})
    public static class Idoc {
        @JacksonXmlProperty(isAttribute = true, localName = "BEGIN") public String begin = "1";
        @JsonProperty("EDI_DC40") public EdiDc40 ediDc40 = new EdiDc40();
        @JsonProperty("E1EDK01") public E1edk01 e1edk01 = new E1edk01();
        @JsonProperty("E1EDKA1") public E1edka1 e1edka1 = new E1edka1();
        @JacksonXmlElementWrapper(useWrapping = false)
        @JsonProperty("E1EDP01") public List<E1edp01> e1edp01;
    }

    @JsonPropertyOrder({"SEGMENT", "TABNAM", "DIRECT", "IDOCTYP", "MESTYP", "SNDPRT", "SNDPRN", "RCVPRT", "RCVPRN",
        "CREDAT"})
    public static class EdiDc40 {
        @JacksonXmlProperty(isAttribute = true, localName = "SEGMENT") public String segment = "1";
        @JsonProperty("TABNAM") public String tabnam = "EDI_DC40";
        @JsonProperty("DIRECT") public String direct = "2";
        @JsonProperty("IDOCTYP") public String idoctyp = "ORDERS05";
        @JsonProperty("MESTYP") public String mestyp = "ORDERS";
        @JsonProperty("SNDPRT") public String sndprt = "LS";
        @JsonProperty("SNDPRN") public String sndprn = "CRM";
        @JsonProperty("RCVPRT") public String rcvprt = "LS";
        @JsonProperty("RCVPRN") public String rcvprn = "ERP";
        @JsonProperty("CREDAT") public String credat;
    }

    @JsonPropertyOrder({"SEGMENT", "VBELN", "AUART", "CURCY", "NETWR", "VKORG", "ERDAT"})
    public static class E1edk01 {
        @JacksonXmlProperty(isAttribute = true, localName = "SEGMENT") public String segment = "1";
        @JsonProperty("VBELN") public String vbeln;
        @JsonProperty("AUART") public String auart = "ZOR";
        @JsonProperty("CURCY") public String curcy;
        @JsonProperty("NETWR") public String netwr;
        @JsonProperty("VKORG") public String vkorg;
        @JsonProperty("ERDAT") public String erdat;
    }

    @JsonPropertyOrder({"SEGMENT", "PARVW", "KUNNR", "NAME1", "TELF1"})
    public static class E1edka1 {
        @JacksonXmlProperty(isAttribute = true, localName = "SEGMENT") public String segment = "1";
        @JsonProperty("PARVW") public String parvw = "AG";
        @JsonProperty("KUNNR") public String kunnr;
        @JsonProperty("NAME1") public String name1;
        @JsonProperty("TELF1") public String telf1;
    }

    @JsonPropertyOrder({"SEGMENT", "POSEX", "MENGE", "MENEE", "VPREI", "E1EDP19"})
    public static class E1edp01 {
        @JacksonXmlProperty(isAttribute = true, localName = "SEGMENT") public String segment = "1";
        @JsonProperty("POSEX") public String posex;
        @JsonProperty("MENGE") public String menge;
        @JsonProperty("MENEE") public String menee;
        @JsonProperty("VPREI") public String vprei;
        @JsonProperty("E1EDP19") public E1edp19 e1edp19 = new E1edp19();
    }

    @JsonPropertyOrder({"SEGMENT", "QUALF", "IDTNR"})
    public static class E1edp19 {
        @JacksonXmlProperty(isAttribute = true, localName = "SEGMENT") public String segment = "1";
        @JsonProperty("QUALF") public String qualf = "002";
        @JsonProperty("IDTNR") public String idtnr;
    }
}
