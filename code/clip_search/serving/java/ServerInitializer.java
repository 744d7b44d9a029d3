// clip-search: multi-model-server's channel initializer, building MMS's own pipeline with two
// answers of the documented {"error": ..., "status": N} kind added to it.
//
// multi-model-server 1.1.11 hands every method on /invocations to the Python worker without saying
// which one it was (InferenceRequestHandler.parseRequest copies the query, headers and body into a
// RequestInput, never the method): GET answered 415 and PUT 200. And a body over max_request_size
// is refused by Netty's HttpObjectAggregator with a 413 that has no body. This class is compiled
// against the installed model-server.jar by clip_search.serving.method_guard, which puts it first
// on the JVM's class path (the "." entry of MMS's -cp: the launch workdir), so MMS loads it instead
// of its own ServerInitializer, and only over the exact MMS class it was written against (SHA-256).
//
// The pipeline is MMS's: [ssl] http, aggregator, handler; handler runs the chain API description ->
// inference (inference connectors) -> management (management connectors) -> invalid request. The
// differences: the aggregator answers an oversize request with a JSON 413 (to "Expect:
// 100-continue" too), and on inference connectors "post-only" answers any method but POST on
// /invocations with a JSON 405 before the request reaches the chain (and so the worker).
package com.amazonaws.ml.mms;

import com.amazonaws.ml.mms.http.ApiDescriptionRequestHandler;
import com.amazonaws.ml.mms.http.HttpRequestHandler;
import com.amazonaws.ml.mms.http.HttpRequestHandlerChain;
import com.amazonaws.ml.mms.http.InferenceRequestHandler;
import com.amazonaws.ml.mms.http.InvalidRequestHandler;
import com.amazonaws.ml.mms.http.ManagementRequestHandler;
import com.amazonaws.ml.mms.servingsdk.impl.PluginsManager;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.ConnectorType;
import com.google.gson.JsonObject;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpMessage;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpMessage;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpServerCodec;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.handler.ssl.SslContext;
import io.netty.util.ReferenceCountUtil;
import java.nio.charset.StandardCharsets;

public class ServerInitializer extends ChannelInitializer<Channel> {

    private final ConnectorType connectorType;
    private final SslContext sslCtx;

    public ServerInitializer(SslContext sslCtx, ConnectorType connectorType) {
        this.sslCtx = sslCtx;
        this.connectorType = connectorType;
    }

    @Override
    public void initChannel(Channel ch) {
        boolean inference =
                connectorType == ConnectorType.BOTH
                        || connectorType == ConnectorType.INFERENCE_CONNECTOR;
        boolean management =
                connectorType == ConnectorType.BOTH
                        || connectorType == ConnectorType.MANAGEMENT_CONNECTOR;
        HttpRequestHandlerChain first = new ApiDescriptionRequestHandler(connectorType);
        HttpRequestHandlerChain last = first;
        PluginsManager plugins = PluginsManager.getInstance();
        if (inference) {
            last = last.setNextHandler(new InferenceRequestHandler(plugins.getInferenceEndpoints()));
        }
        if (management) {
            last = last.setNextHandler(new ManagementRequestHandler(plugins.getManagementEndpoints()));
        }
        last.setNextHandler(new InvalidRequestHandler());

        ChannelPipeline pipeline = ch.pipeline();
        if (sslCtx != null) {
            pipeline.addLast("ssl", sslCtx.newHandler(ch.alloc()));
        }
        pipeline.addLast("http", new HttpServerCodec());
        pipeline.addLast(
                "aggregator", new JsonTooLarge(ConfigManager.getInstance().getMaxRequestSize()));
        if (inference) {
            pipeline.addLast("post-only", new PostOnlyInvocations());
        }
        pipeline.addLast("handler", new HttpRequestHandler(first));
    }

    /** A JSON {"error", "status"} answer. */
    static FullHttpResponse jsonError(HttpResponseStatus status, String message) {
        JsonObject error = new JsonObject();
        error.addProperty("error", message);
        error.addProperty("status", status.code());
        byte[] body = error.toString().getBytes(StandardCharsets.UTF_8);
        FullHttpResponse response =
                new DefaultFullHttpResponse(
                        HttpVersion.HTTP_1_1, status, Unpooled.wrappedBuffer(body));
        response.headers().set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.APPLICATION_JSON);
        response.headers().setInt(HttpHeaderNames.CONTENT_LENGTH, body.length);
        return response;
    }

    static void send(ChannelHandlerContext ctx, FullHttpResponse response, boolean keepAlive) {
        if (!keepAlive) {
            response.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
        }
        ctx.writeAndFlush(response)
                .addListener(
                        keepAlive
                                ? ChannelFutureListener.CLOSE_ON_FAILURE
                                : ChannelFutureListener.CLOSE);
    }

    /** Netty's aggregator, whose refusals of an oversize request are a JSON 413. */
    static final class JsonTooLarge extends HttpObjectAggregator {

        JsonTooLarge(int maxContentLength) {
            super(maxContentLength);
        }

        private FullHttpResponse tooLarge(HttpMessage request) {
            String length = request.headers().get(HttpHeaderNames.CONTENT_LENGTH);
            String size = length == null ? "" : " of " + length + " bytes";
            return jsonError(
                    HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE,
                    "request body"
                            + size
                            + " is over the model server's limit of "
                            + maxContentLength()
                            + " bytes (twice SAGEMAKER_MAX_PAYLOAD_IN_MB); split the batch");
        }

        /** "Expect: 100-continue" with a Content-Length over the limit (curl sends it). */
        @Override
        protected Object newContinueResponse(
                HttpMessage start, int maxContentLength, ChannelPipeline pipeline) {
            Object response = super.newContinueResponse(start, maxContentLength, pipeline);
            if (response instanceof FullHttpResponse
                    && ((FullHttpResponse) response).status().code()
                            == HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE.code()) {
                ReferenceCountUtil.release(response);
                return tooLarge(start);
            }
            return response;
        }

        @Override
        protected void handleOversizedMessage(ChannelHandlerContext ctx, HttpMessage oversized)
                throws Exception {
            if (!(oversized instanceof HttpRequest)) {
                super.handleOversizedMessage(ctx, oversized);
                return;
            }
            // As Netty's own: close, unless the client waits for 100-continue on a keep-alive
            // connection (then the body was never sent and the connection stays usable).
            boolean keepAlive =
                    !(oversized instanceof FullHttpMessage)
                            && HttpUtil.is100ContinueExpected(oversized)
                            && HttpUtil.isKeepAlive(oversized);
            send(ctx, tooLarge(oversized), keepAlive);
        }
    }

    /** Any method but POST on /invocations: a JSON 405 with "Allow: POST". */
    static final class PostOnlyInvocations extends ChannelInboundHandlerAdapter {

        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            if (msg instanceof FullHttpRequest) {
                FullHttpRequest request = (FullHttpRequest) msg;
                HttpMethod method = request.method();
                if (!HttpMethod.POST.equals(method) && isInvocations(request.uri())) {
                    boolean keepAlive = HttpUtil.isKeepAlive(request);
                    ReferenceCountUtil.release(request);
                    FullHttpResponse response =
                            jsonError(
                                    HttpResponseStatus.METHOD_NOT_ALLOWED,
                                    "method "
                                            + method.name()
                                            + " is not allowed on /invocations; use POST");
                    response.headers().set(HttpHeaderNames.ALLOW, HttpMethod.POST.name());
                    send(ctx, response, keepAlive);
                    return;
                }
            }
            ctx.fireChannelRead(msg);
        }

        /** The path InferenceRequestHandler routes as invocations: "/invocations", any query. */
        static boolean isInvocations(String uri) {
            String[] segments = new QueryStringDecoder(uri).path().split("/");
            return segments.length == 2 && "invocations".equals(segments[1]);
        }
    }
}
