internal import CRabbitMQ

// Synchronous AMQP methods (RPCs), run on the I/O thread on behalf of `AMQPConnection`.
// librabbitmq queues frames of other channels that arrive while it waits for a reply; each
// operation dispatches them as soon as its RPC returns.
extension IOLoop {
    /// Reads the failure of the RPC that just returned NULL on `channel`, reacts to it (close-ok
    /// for a broker-closed channel, connection teardown for anything fatal) and throws it.
    func rpcFailed(channel: UInt16, _ what: String) throws(AMQPError) -> Never {
        let reply = amqp_get_rpc_reply(connection)
        try throwRPCError(reply, channel: channel, what)
    }

    func throwRPCError(_ reply: amqp_rpc_reply_t, channel: UInt16, _ what: String) throws(AMQPError) -> Never {
        let endpoint = negotiated.endpoint.description
        switch reply.reply_type {
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD:
            guard let decoded = reply.reply.decoded else { break }
            let m = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let error = AMQPError(
                .channelClosed, "\(what) failed", replyCode: m.reply_code, replyText: String(amqpBytes: m.reply_text),
                classID: m.class_id, methodID: m.method_id, channel: channel, endpoint: endpoint)
            var ok = amqp_channel_close_ok_t()
            sendMethod(channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
            channelClosedByBroker(channel, error, answeringRPC: true)
            dispatchQueuedFrames()
            throw error
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD:
            guard let decoded = reply.reply.decoded else { break }
            let m = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let error = AMQPError(
                .connectionClosed, "\(what) failed: the broker closed the connection", replyCode: m.reply_code,
                replyText: String(amqpBytes: m.reply_text), classID: m.class_id, methodID: m.method_id, endpoint: endpoint)
            var ok = amqp_connection_close_ok_t()
            sendMethod(0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok)
            fail(error)
            throw error
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let error = libraryError(reply.library_error, what)
            fail(error)
            throw error
        default:
            break
        }
        let error = AMQPError(.protocolError, "\(what) failed with an unexpected reply", channel: channel, endpoint: endpoint)
        fail(error)
        throw error
    }

    func ensureUsable() throws(AMQPError) {
        if let fatal { throw fatal }
    }

    /// The lowest channel id not in use; reusing ids keeps the table small and is safe because
    /// a closed id is removed only after close-ok.
    func allocateChannelID() throws(AMQPError) -> UInt16 {
        let limit = negotiated.channelMax == 0 ? Int(UInt16.max) : negotiated.channelMax
        var id: UInt16 = 1
        while channels[id] != nil {
            guard Int(id) < limit else {
                throw AMQPError(.invalidArgument, "all \(limit) channels of the connection are in use")
            }
            id += 1
        }
        return id
    }

    func openChannel(_ id: UInt16) throws(AMQPError) {
        guard amqp_channel_open(connection, id) != nil else {
            try rpcFailed(channel: id, "channel.open")
        }
        dispatchQueuedFrames()
    }

    /// The channel for topology RPCs, opened on first use and again after the broker closed it
    /// (a failed passive declare, an inequivalent argument).
    func withControlChannel<T>(_ body: (UInt16) throws(AMQPError) -> T) throws(AMQPError) -> T {
        try ensureUsable()
        let id: UInt16
        if let existing = controlChannel {
            id = existing
        } else {
            id = try allocateChannelID()
            try openChannel(id)
            channels[id] = Channel(id: id, role: .control)
            controlChannel = id
        }
        let result = try body(id)
        dispatchQueuedFrames()
        return result
    }

    func declareExchange(_ d: ExchangeDeclaration) throws(AMQPError) {
        try withControlChannel { (id) throws(AMQPError) in
            let arena = CArena()
            let name = try arena.shortString(d.name, field: "exchange name")
            let type = try arena.shortString(d.type, field: "exchange type")
            let arguments = try arena.table(d.arguments)
            guard amqp_exchange_declare(
                connection, id, name, type, d.passive ? 1 : 0, d.durable ? 1 : 0, d.autoDelete ? 1 : 0,
                d.internal ? 1 : 0, arguments) != nil
            else {
                try rpcFailed(channel: id, "declaring exchange \"\(d.name)\"")
            }
        }
    }

    func deleteExchange(_ name: String, ifUnused: Bool) throws(AMQPError) {
        try withControlChannel { (id) throws(AMQPError) in
            let arena = CArena()
            guard amqp_exchange_delete(connection, id, try arena.shortString(name, field: "exchange name"), ifUnused ? 1 : 0) != nil else {
                try rpcFailed(channel: id, "deleting exchange \"\(name)\"")
            }
        }
    }

    func declareQueue(_ d: QueueDeclaration) throws(AMQPError) -> QueueDeclareResult {
        try withControlChannel { (id) throws(AMQPError) in
            let arena = CArena()
            let name = try arena.shortString(d.name, field: "queue name")
            let arguments = try arena.table(d.arguments)
            guard let ok = amqp_queue_declare(
                connection, id, name, d.passive ? 1 : 0, d.durable ? 1 : 0, d.exclusive ? 1 : 0,
                d.autoDelete ? 1 : 0, arguments)
            else {
                try rpcFailed(channel: id, d.passive ? "checking queue \"\(d.name)\"" : "declaring queue \"\(d.name)\"")
            }
            return QueueDeclareResult(
                name: String(amqpBytes: ok.pointee.queue), messageCount: ok.pointee.message_count,
                consumerCount: ok.pointee.consumer_count)
        }
    }

    func bindQueue(_ queue: String, exchange: String, routingKey: String, arguments: FieldTable, unbind: Bool) throws(AMQPError) {
        try withControlChannel { (id) throws(AMQPError) in
            let arena = CArena()
            let q = try arena.shortString(queue, field: "queue name")
            let x = try arena.shortString(exchange, field: "exchange name")
            let k = try arena.shortString(routingKey, field: "routing key")
            let args = try arena.table(arguments)
            let what = "\(unbind ? "unbinding" : "binding") queue \"\(queue)\" \(unbind ? "from" : "to") exchange \"\(exchange)\" with key \"\(routingKey)\""
            if unbind {
                guard amqp_queue_unbind(connection, id, q, x, k, args) != nil else { try rpcFailed(channel: id, what) }
            } else {
                guard amqp_queue_bind(connection, id, q, x, k, args) != nil else { try rpcFailed(channel: id, what) }
            }
        }
    }

    func bindExchange(destination: String, source: String, routingKey: String, arguments: FieldTable) throws(AMQPError) {
        try withControlChannel { (id) throws(AMQPError) in
            let arena = CArena()
            guard amqp_exchange_bind(
                connection, id, try arena.shortString(destination, field: "exchange name"),
                try arena.shortString(source, field: "exchange name"), try arena.shortString(routingKey, field: "routing key"),
                try arena.table(arguments)) != nil
            else {
                try rpcFailed(channel: id, "binding exchange \"\(destination)\" to exchange \"\(source)\"")
            }
        }
    }

    func deleteQueue(_ name: String, ifUnused: Bool, ifEmpty: Bool) throws(AMQPError) -> UInt32 {
        try withControlChannel { (id) throws(AMQPError) in
            let arena = CArena()
            guard let ok = amqp_queue_delete(connection, id, try arena.shortString(name, field: "queue name"), ifUnused ? 1 : 0, ifEmpty ? 1 : 0) else {
                try rpcFailed(channel: id, "deleting queue \"\(name)\"")
            }
            return ok.pointee.message_count
        }
    }

    func purgeQueue(_ name: String) throws(AMQPError) -> UInt32 {
        try withControlChannel { (id) throws(AMQPError) in
            let arena = CArena()
            guard let ok = amqp_queue_purge(connection, id, try arena.shortString(name, field: "queue name")) else {
                try rpcFailed(channel: id, "purging queue \"\(name)\"")
            }
            return ok.pointee.message_count
        }
    }

    /// Opens a channel of its own for the consumer, sets its prefetch and starts consuming.
    func consume(_ options: ConsumeOptions, sink: any DeliverySink)
        throws(AMQPError) -> (channel: UInt16, epoch: UInt64, consumerTag: String)
    {
        try ensureUsable()
        guard options.prefetch >= 1 else {
            throw AMQPError(.invalidArgument, "prefetch must be at least 1 (0 would let the broker send without limit)")
        }
        let id = try allocateChannelID()
        try openChannel(id)
        do {
            guard amqp_basic_qos(connection, id, 0, options.prefetch, 0) != nil else {
                try rpcFailed(channel: id, "setting prefetch \(options.prefetch) for queue \"\(options.queue)\"")
            }
            dispatchQueuedFrames()
            let arena = CArena()
            guard let ok = amqp_basic_consume(
                connection, id, try arena.shortString(options.queue, field: "queue name"),
                try arena.shortString(options.consumerTag, field: "consumer tag"), 0, 0, options.exclusive ? 1 : 0,
                try arena.table(options.arguments))
            else {
                try rpcFailed(channel: id, "consuming from queue \"\(options.queue)\"")
            }
            let tag = String(amqpBytes: ok.pointee.consumer_tag)
            let consumer = ConsumerState(
                queue: options.queue, consumerTag: tag, sink: sink, settler: AckSettler(options.settlement, prefetch: options.prefetch))
            let channel = Channel(id: id, role: .consumer(consumer))
            channel.assembler.maxBodySize = options.maxBodySize
            channels[id] = channel
            // Deliveries may already sit in librabbitmq's queue behind consume-ok.
            dispatchQueuedFrames()
            return (id, channel.epoch, tag)
        } catch {
            // The channel is open but unusable for this consumer: close it so its id can be reused.
            if isAlive, error.code != .channelClosed {
                _ = amqp_channel_close(connection, id, Int32(AMQP_REPLY_SUCCESS))
                dispatchQueuedFrames()
            }
            throw error
        }
    }

    /// `basic.cancel`: no new deliveries; those already received stay valid and can be settled
    /// while the channel is open. The deliveries stream ends after the last of them.
    func cancelConsumer(channel id: UInt16, epoch: UInt64) throws(AMQPError) {
        try ensureUsable()
        guard let channel = channels[id], case .consumer(let consumer) = channel.role,
            channel.lifecycle.cancel(epoch: epoch) == [.sendCancel]
        else { return }
        let arena = CArena()
        guard amqp_basic_cancel(connection, id, arena.bytes(consumer.consumerTag.utf8)) != nil else {
            try rpcFailed(channel: id, "cancelling consumer \(consumer.consumerTag)")
        }
        // Frames that arrived before cancel-ok (a broker cancel among them) are dispatched first.
        dispatchQueuedFrames()
        carryOut(channel.lifecycle.cancelSent(), on: channel, error: nil)
    }

    /// Sends what is settled, then closes the consumer's channel; the broker requeues whatever
    /// is still unsettled.
    func closeConsumerChannel(channel id: UInt16, epoch: UInt64) throws(AMQPError) {
        try ensureUsable()
        guard let channel = channels[id], case .consumer = channel.role else { return }
        try closeChannel(channel, epoch: epoch)
    }

    /// Closes a consumer or get channel of incarnation `epoch` as its lifecycle says: what is
    /// settled goes out first, then channel.close; the channel is forgotten (and a subscription
    /// ends) whatever the reply.
    func closeChannel(_ channel: Channel, epoch: UInt64) throws(AMQPError) {
        let actions = channel.lifecycle.close(epoch: epoch)
        guard actions.contains(.flushAndSendClose) else {
            carryOut(actions, on: channel, error: nil)
            return
        }
        defer { carryOut(channel.lifecycle.closeSent(), on: channel, error: nil) }
        flushSettlements(now: .max)
        try ensureUsable()
        pendingSettlement.remove(channel.id)
        channel.assembler.reset()
        let reply = amqp_channel_close(connection, channel.id, Int32(AMQP_REPLY_SUCCESS))
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            try throwRPCError(reply, channel: channel.id, "closing channel \(channel.id)")
        }
        // Frames of the closing channel that arrived meanwhile are dropped here.
        dispatchQueuedFrames()
    }

    func openPublisher(_ options: PublisherOptions) throws(AMQPError) -> UInt16 {
        try ensureUsable()
        guard options.maxInFlight >= 1 else {
            throw AMQPError(.invalidArgument, "a publisher needs a window of at least 1 unconfirmed publish")
        }
        let id = try allocateChannelID()
        try openChannel(id)
        guard amqp_confirm_select(connection, id) != nil else {
            try rpcFailed(channel: id, "confirm.select")
        }
        channels[id] = Channel(id: id, role: .publisher(PublisherState(maxInFlight: options.maxInFlight)))
        dispatchQueuedFrames()
        return id
    }
}
