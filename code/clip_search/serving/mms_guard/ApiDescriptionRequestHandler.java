// clip-search: the first handler of multi-model-server's request chain, with one rule added.
//
// multi-model-server 1.1.11 hands every method on /invocations to the Python worker without saying
// which one it was (InferenceRequestHandler.parseRequest copies the query, headers and body into a
// RequestInput, not the method), so GET answered 415 and PUT 200. This class, compiled against the
// installed model-server.jar by clip_search.serving.method_guard and put first on the JVM's class
// path (the "." entry of MMS's -cp, the launch workdir), answers any method but POST on
// /invocations with 405 and our JSON error before the request goes further. Everything else
// behaves as MMS's own class of this name: the API description on "OPTIONS /" and
// "/api-description", 405 for other methods on "/", and every other request to the next handler.
// method_guard only installs it for the MMS class it was written against (checked by SHA-256).
package com.amazonaws.ml.mms.http;

import com.amazonaws.ml.mms.archive.ModelException;
import com.amazonaws.ml.mms.openapi.OpenApiUtils;
import com.amazonaws.ml.mms.util.ConnectorType;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.google.gson.JsonObject;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.nio.charset.StandardCharsets;

public class ApiDescriptionRequestHandler extends HttpRequestHandlerChain {

    /** The SageMaker inference route: POST only. */
    static final String INVOCATIONS = "invocations";

    private final ConnectorType connectorType;

    public ApiDescriptionRequestHandler(ConnectorType connectorType) {
        this.connectorType = connectorType;
    }

    @Override
    protected void handleRequest(
            ChannelHandlerContext ctx,
            FullHttpRequest req,
            QueryStringDecoder decoder,
            String[] segments)
            throws ModelException {
        if (connectorType != ConnectorType.MANAGEMENT_CONNECTOR
                && segments.length == 2
                && INVOCATIONS.equals(segments[1])
                && !HttpMethod.POST.equals(req.method())) {
            methodNotAllowed(ctx, req.method());
            return;
        }
        boolean root = segments.length == 0;
        if (decoder != null && (root || "api-description".equals(segments[1]))) {
            boolean options = HttpMethod.OPTIONS.equals(req.method());
            if ((root && options && "/".equals(decoder.path())) || segments.length == 2) {
                NettyUtils.sendJsonResponse(ctx, OpenApiUtils.listApis(connectorType));
                return;
            }
            throw new MethodNotAllowedException();
        }
        chain.handleRequest(ctx, req, decoder, segments);
    }

    private static void methodNotAllowed(ChannelHandlerContext ctx, HttpMethod method) {
        JsonObject error = new JsonObject();
        error.addProperty(
                "error", "method " + method.name() + " is not allowed on /invocations; use POST");
        error.addProperty("status", HttpResponseStatus.METHOD_NOT_ALLOWED.code());
        byte[] body = error.toString().getBytes(StandardCharsets.UTF_8);
        FullHttpResponse response =
                new DefaultFullHttpResponse(
                        HttpVersion.HTTP_1_1,
                        HttpResponseStatus.METHOD_NOT_ALLOWED,
                        Unpooled.wrappedBuffer(body));
        response.headers().set(HttpHeaderNames.CONTENT_TYPE, "application/json");
        response.headers().set(HttpHeaderNames.ALLOW, "POST");
        NettyUtils.sendHttpResponse(ctx, response, true);
    }
}
