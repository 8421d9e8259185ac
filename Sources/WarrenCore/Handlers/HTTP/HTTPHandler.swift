import AMQP
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// `http`: each message becomes one request to a webhook (docs/handlers.md, "http"). The body goes out as is,
/// with the message's `Content-Type` and `X-Warren-*` metadata headers; the answer's status
/// decides the outcome (`HTTPResponseMapping`), and a 2xx body is the RPC reply.
///
/// One `HTTPClient` per handler keeps a pool of keep-alive connections to the webhook, sized to
/// the concurrency of the queues that use the handler. The handler enforces its timeout itself:
/// the whole exchange, response body included, must finish within `input.timeout`.
struct HTTPHandler: MessageHandler {
    let name: String
    let url: String
    let method: HTTPMethod
    /// The configured headers, validated at start-up. They may carry secrets (API tokens):
    /// their values never go into a log line or an error text.
    let headers: HTTPHeaders
    /// `host:port` of the webhook, for error texts; the URL itself may carry credentials.
    let target: String
    let clients: HTTPClientHolder
    let logger: Logger

    /// How long establishing a connection may take before the request fails (and the queue's
    /// retry ladder takes over), unless the handler timeout ends the request sooner.
    static let connectTimeout: Duration = .seconds(10)

    /// Lets the webhook's operator tell Warren's requests from others in their access logs.
    static let userAgent = "warren/\(WarrenVersion.current)"

    var enforcesOwnTimeout: Bool { true }

    init(name: String, url: String, method: String, headers: [String: String], poolSize: Int, logger: Logger) throws(HandlerRegistry.SetupError) {
        guard let parsed = URL(string: url), let host = parsed.host, !host.isEmpty else {
            throw HandlerRegistry.SetupError(handler: name, message: "url is not a valid http:// or https:// URL")
        }
        let secure = parsed.scheme?.lowercased() == "https"
        self.name = name
        self.url = url
        self.method = HTTPMethod(rawValue: method.uppercased())
        self.target = "\(host.contains(":") ? "[\(host)]" : host):\(parsed.port ?? (secure ? 443 : 80))"
        self.headers = try Self.validated(headers, handler: name)
        self.clients = HTTPClientHolder(poolSize: poolSize, connectTimeout: Self.connectTimeout)
        self.logger = logger
    }

    func handle(_ input: HandlerInput) async -> HandlerOutcome {
        guard let client = clients.client() else {
            return .failure(HandlerFailure("the http handler \(name) is shut down"))
        }
        let timeout = input.timeout
        let request = request(for: input)
        let wantsReply = !(input.properties.replyTo ?? "").isEmpty
        // The client's deadline covers the wait for the response head only; the race with a
        // timer covers the body too. Whichever fires, the text is the same.
        let deadline = NIODeadline.now() + TimeAmount(timeout)
        return await withTaskGroup(of: HandlerOutcome?.self) { group in
            group.addTask { await exchange(request, on: client, deadline: deadline, wantsReply: wantsReply, timeout: timeout) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            // Cancelling the exchange cancels its request, which closes that connection.
            group.cancelAll()
            return first ?? Self.timeoutFailure(timeout)
        }
    }

    func shutdown() async { await clients.shutdown(logger: logger) }

    /// The request for one message: the body, its content type and Warren's metadata headers,
    /// then the configured headers, which replace Warren's of the same name (an operator who
    /// sets `Content-Type` in the config means it).
    func request(for input: HandlerInput) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = method
        // A value a header cannot carry as it is goes in base64 under a `-Base64` name instead
        // (`SinkText`); a content type that cannot is not sent as one.
        switch input.properties.contentType.map(SinkText.httpHeader) {
        case .plain(let text) where !text.isEmpty:
            request.headers.add(name: "Content-Type", value: text)
        case .base64(let encoded):
            request.headers.add(name: "Content-Type", value: "application/octet-stream")
            request.headers.add(name: "X-Warren-Content-Type-Base64", value: encoded)
        default:
            request.headers.add(name: "Content-Type", value: "application/octet-stream")
        }
        request.headers.add(name: "X-Warren-Queue", value: Self.fieldValue(input.queue))
        Self.add("X-Warren-Routing-Key", input.routingKey, to: &request.headers)
        if let messageID = input.properties.messageID {
            Self.add("X-Warren-Message-Id", messageID, to: &request.headers)
        }
        request.headers.add(name: "X-Warren-Attempt", value: String(input.attempt))
        request.headers.add(name: "X-Warren-Redelivered", value: input.redelivered ? "true" : "false")
        request.headers.add(name: "User-Agent", value: Self.userAgent)
        // The run's trace context (docs/tracing.md).
        request.headers.add(name: MessageTrace.traceparentHeader, value: input.trace.traceparent)
        if let state = input.trace.state { request.headers.add(name: MessageTrace.tracestateHeader, value: state) }
        for (name, value) in headers {
            request.headers.replaceOrAdd(name: name, value: value)
        }
        request.body = .bytes(input.body)
        return request
    }

    /// `name: value`, or `name-Base64: base64(value)` when a header cannot carry the value.
    static func add(_ name: String, _ value: AMQPString, to headers: inout HTTPHeaders) {
        switch SinkText.httpHeader(value) {
        case .plain(let text): headers.add(name: name, value: text)
        case .base64(let encoded): headers.add(name: "\(name)-Base64", value: encoded)
        }
    }

    private func exchange(
        _ request: HTTPClientRequest, on client: HTTPClient, deadline: NIODeadline, wantsReply: Bool, timeout: Duration
    ) async -> HandlerOutcome {
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, deadline: deadline)
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            return Self.timeoutFailure(timeout)
        } catch {
            return .failure(HandlerFailure(HTTPErrorText.describe(error, target: target)))
        }
        let status = Int(response.status.code)
        let body: HTTPResponseMapping.Body
        do {
            body = try await Self.read(response.body, keep: wantsReply && (200...299).contains(status))
        } catch {
            // The status is known; only a reply that was cut off makes it a failure.
            guard wantsReply, (200...299).contains(status) else {
                return HTTPResponseMapping.outcome(status: status, retryAfter: response.headers.first(name: "Retry-After"), body: .unwanted)
            }
            return .failure(HandlerFailure(HTTPErrorText.describe(error, target: target), httpStatus: status))
        }
        return HTTPResponseMapping.outcome(status: status, retryAfter: response.headers.first(name: "Retry-After"), body: body)
    }

    /// Reads the body, keeping it only when it becomes the reply. Reading stops after
    /// `maxReplyBytes`: a longer body ends the exchange early (its connection is closed rather
    /// than drained), so a huge answer costs neither memory nor time.
    static func read(_ body: HTTPClientResponse.Body, keep: Bool) async throws -> HTTPResponseMapping.Body {
        var kept: [UInt8] = []
        var total = 0
        for try await chunk in body {
            total += chunk.readableBytes
            if total > HTTPResponseMapping.maxReplyBytes { return keep ? .tooLarge : .unwanted }
            if keep { kept.append(contentsOf: chunk.readableBytesView) }
        }
        return keep ? .complete(kept) : .unwanted
    }

    static func timeoutFailure(_ timeout: Duration) -> HandlerOutcome {
        .failure(HandlerFailure("timeout after \(timeout.configText)", isTimeout: true))
    }
}
