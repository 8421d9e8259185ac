internal import CRabbitMQ
internal import CRabbitMQShims
import Logging

extension IOLoop {
    /// Opens the socket and logs in, trying each endpoint in order. Runs on the I/O thread.
    static func connect(
        _ configuration: ConnectionConfiguration, queue: CommandQueue,
        events: AsyncStream<ConnectionEvent>.Continuation, logger: Logger
    ) throws(AMQPError) -> IOLoop {
        guard !configuration.endpoints.isEmpty else {
            throw AMQPError(.invalidArgument, "no broker URL is configured")
        }
        var failures: [AMQPError] = []
        for endpoint in configuration.endpoints {
            do {
                let (connection, negotiated) = try open(endpoint, configuration)
                var loopLogger = logger
                loopLogger[metadataKey: "endpoint"] = "\(endpoint)"
                let progress = IOLoopProgress(
                    name: configuration.connectionName, heartbeat: negotiated.heartbeat, callTimeout: configuration.rpcTimeout)
                return IOLoop(
                    connection: connection, queue: queue, events: events, negotiated: negotiated, logger: loopLogger,
                    maxFramesPerTurn: configuration.maxFramesPerTurn, isPlainTCP: !endpoint.useTLS, progress: progress)
            } catch {
                logger.debug("endpoint failed", metadata: ["endpoint": "\(endpoint)", "error": "\(error)"])
                failures.append(error)
            }
        }
        if failures.count == 1, let only = failures.first { throw only }
        // Authentication failures are the most actionable; otherwise report every endpoint.
        if let auth = failures.first(where: { $0.code == .authenticationFailed }) { throw auth }
        throw AMQPError(.connectFailed, "no broker could be reached: " + failures.map(\.description).joined(separator: "; "))
    }

    private static func open(_ endpoint: AMQPEndpoint, _ configuration: ConnectionConfiguration)
        throws(AMQPError) -> (amqp_connection_state_t, NegotiatedParameters)
    {
        let where_ = endpoint.description
        guard let connection = amqp_new_connection() else {
            throw AMQPError(.library, "cannot allocate a librabbitmq connection", endpoint: where_)
        }
        var keep = false
        defer { if !keep { amqp_destroy_connection(connection) } }

        let tls = configuration.tls ?? TLSConfiguration()
        let socket: OpaquePointer?
        if endpoint.useTLS {
            socket = try tlsSocket(connection, tls, endpoint: where_)
        } else {
            socket = amqp_tcp_socket_new(connection)
        }
        guard let socket else {
            throw AMQPError(.library, "cannot create a socket", endpoint: where_)
        }
        var handshake = configuration.handshakeTimeout.timeval
        var rpc = configuration.rpcTimeout.timeval
        amqp_set_handshake_timeout(connection, &handshake)
        amqp_set_rpc_timeout(connection, &rpc)

        var connectTimeout = configuration.connectTimeout.timeval
        let status = amqp_socket_open_noblock(socket, endpoint.host, Int32(endpoint.port), &connectTimeout)
        guard status == AMQP_STATUS_OK.rawValue else {
            if endpoint.useTLS, let error = tlsOpenError(status: status, endpoint: endpoint, tls: tls) { throw error }
            let text = amqp_error_string2(status).map { String(cString: $0) } ?? "status \(status)"
            let code: AMQPError.Code = (status == AMQP_STATUS_SSL_ERROR.rawValue
                || status == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED.rawValue
                || status == AMQP_STATUS_SSL_PEER_VERIFY_FAILED.rawValue
                || status == AMQP_STATUS_SSL_CONNECTION_FAILED.rawValue) ? .tls : .connectFailed
            throw AMQPError(code, "cannot connect to \(endpoint.host):\(endpoint.port): \(text)", endpoint: where_)
        }
        let userTimeoutMS = UInt32(clamping: configuration.effectiveTCPUserTimeout.nanoseconds / 1_000_000)
        let optionStatus = warren_set_tcp_options(amqp_get_sockfd(connection), 30, 10, 3, userTimeoutMS)
        guard optionStatus == 0 else {
            throw AMQPError(.connectFailed, "cannot set TCP keepalive / TCP_USER_TIMEOUT (errno \(-optionStatus))", endpoint: where_)
        }

        let heartbeat = Int32(clamping: configuration.heartbeat.secondsRoundedUp)
        let reply = warren_amqp_login(
            connection, endpoint.vhost, Int32(clamping: configuration.channelMax), Int32(clamping: configuration.frameMax),
            heartbeat, configuration.connectionName, configuration.clientVersion, 0, endpoint.user, endpoint.password)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            if endpoint.useTLS, reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION,
                let error = tlsLoginError(status: reply.library_error, endpoint: endpoint, tls: tls)
            {
                throw error
            }
            throw loginError(reply, endpoint: endpoint)
        }
        keep = true
        let negotiated = NegotiatedParameters(
            endpoint: endpoint, heartbeat: Int(amqp_get_heartbeat(connection)), frameMax: Int(amqp_get_frame_max(connection)),
            channelMax: Int(amqp_get_channel_max(connection)))
        return (connection, negotiated)
    }

    private static func loginError(_ reply: amqp_rpc_reply_t, endpoint: AMQPEndpoint) -> AMQPError {
        let where_ = endpoint.description
        switch reply.reply_type {
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD:
            guard let decoded = reply.reply.decoded else { break }
            let m = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = String(amqpBytes: m.reply_text)
            if m.reply_code == 403 {
                return AMQPError(.authenticationFailed, "the broker refused the login of user \"\(endpoint.user)\"",
                                 replyCode: m.reply_code, replyText: text, endpoint: where_)
            }
            return AMQPError(.connectFailed, "the broker refused the connection to vhost \"\(endpoint.vhost)\"",
                             replyCode: m.reply_code, replyText: text, endpoint: where_)
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let text = amqp_error_string2(reply.library_error).map { String(cString: $0) } ?? "status \(reply.library_error)"
            return AMQPError(.connectFailed, "the AMQP handshake failed: \(text)", endpoint: where_)
        default:
            break
        }
        return AMQPError(.connectFailed, "the AMQP handshake failed", endpoint: where_)
    }
}
