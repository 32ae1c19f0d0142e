package syncbus.peers;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.dataformat.xml.XmlMapper;
import com.fasterxml.jackson.dataformat.xml.ser.ToXmlGenerator;
import org.apache.camel.Exchange;
import org.apache.camel.builder.RouteBuilder;
import org.apache.camel.component.jackson.JacksonDataFormat;
import org.apache.camel.component.jacksonxml.JacksonXMLDataFormat;

/**
 * The two routes of the benchmark, both: JSON (Jackson) -> when filter -> OrderMapper bean -> XML (Jackson XML).
 *
 * <ul>
 *   <li>{@code stdin}: stream:in (one order per line) -> ... -> stream:out (one document per line);</li>
 *   <li>{@code http}: platform-http POST /ingress/crm-orders -> ... -> camel-http POST to the target,
 *       answering the caller 200 once the target has the document.</li>
 * </ul>
 */
public class PeerRoutes extends RouteBuilder {
    private final String mode;
    private final String target;

    public PeerRoutes(String mode, String target) {
        this.mode = mode;
        this.target = target;
    }

    @Override
    public void configure() {
        ObjectMapper jsonMapper = new ObjectMapper()
                .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);
        JacksonDataFormat json = new JacksonDataFormat(jsonMapper, CrmOrder.class);

        XmlMapper xmlMapper = new XmlMapper();
        xmlMapper.setSerializationInclusion(JsonInclude.Include.NON_NULL);
        xmlMapper.configure(ToXmlGenerator.Feature.WRITE_XML_DECLARATION, true);
        JacksonXMLDataFormat xml = new JacksonXMLDataFormat(xmlMapper, Orders05.class);

        OrderMapper mapper = new OrderMapper();

        if ("stdin".equals(mode)) {
            from("stream:in?encoding=UTF-8&initialPromptDelay=0").routeId("stdin")
                .unmarshal(json)
                .filter().method(mapper, "approved")
                    .bean(mapper, "map")
                    .marshal(xml)
                    .to("stream:out?encoding=UTF-8");
        } else {
            from("platform-http:/ingress/crm-orders?httpMethodRestrict=POST").routeId("http")
                .unmarshal(json)
                .filter().method(mapper, "approved")
                    .bean(mapper, "map")
                    .marshal(xml)
                    .removeHeaders("*")
                    .setHeader(Exchange.HTTP_METHOD, constant("POST"))
                    .setHeader(Exchange.CONTENT_TYPE, constant("application/xml; charset=utf-8"))
                    .to(target)
                .end()
                .removeHeaders("*")
                .setHeader(Exchange.HTTP_RESPONSE_CODE, constant(200))
                .setHeader(Exchange.CONTENT_TYPE, constant("application/json"))
                .setBody(constant("{}"));
        }
    }
}
