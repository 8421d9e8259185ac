internal import CRabbitMQ

// `basic.get` on a channel of its own, run on the I/O thread on behalf of `GetChannel`.
//
// The get-ok / get-empty exchange is an RPC like the others (librabbitmq waits for the reply up
// to its RPC timeout). The content that follows get-ok (header, body frames) is not read inside
// the RPC: it arrives through the loop's ordinary frame dispatch and the channel's
// `ContentAssembler`, so the loop never waits for a body, and a body over `maxBodySize` is
// spooled to a file as it arrives, exactly as for a consumer.
extension IOLoop {
    /// What a get channel needs between the get-ok and the last body frame, and after.
    final class GetState {
        typealias Reply = @Sendable (Result<GotMessage?, AMQPError>) -> Void

        /// The caller of the get whose content is still arriving (at most one at a time).
        var waiter: Reply?
        /// The message count of the pending get-ok.
        var messageCount: UInt32 = 0
        /// Tags received and not acked yet: a second ack of a tag, or an ack of a tag never
        /// received, would make the broker close the channel (406), so both are refused here.
        var unacked: Set<UInt64> = []

        /// Fails the pending get, if any.
        func fail(_ error: AMQPError) {
            guard let waiter else { return }
            self.waiter = nil
            waiter(.failure(error))
        }
    }

    func openGetChannel(maxBodySize: Int?) throws(AMQPError) -> (channel: UInt16, epoch: UInt64) {
        try ensureUsable()
        if let maxBodySize, maxBodySize < 0 {
            throw AMQPError(.invalidArgument, "maxBodySize must not be negative (\(maxBodySize))")
        }
        let id = try allocateChannelID()
        try openChannel(id)
        let channel = Channel(id: id, role: .getter(GetState()))
        channel.assembler.maxBodySize = maxBodySize
        channels[id] = channel
        return (id, channel.epoch)
    }

    /// The open get channel `id` of incarnation `epoch`, or the error a caller should see.
    private func getChannel(_ id: UInt16, epoch: UInt64) throws(AMQPError) -> (Channel, GetState) {
        try ensureUsable()
        guard let channel = channels[id], channel.epoch == epoch, channel.isOpen, case .getter(let state) = channel.role else {
            throw AMQPError(
                .channelClosed, "the get channel is closed (by close(), or by the broker after an error)", channel: id,
                endpoint: negotiated.endpoint.description)
        }
        return (channel, state)
    }

    /// Sends `basic.get` (manual ack) and answers `reply` exactly once: at once with nil on
    /// get-empty or with an error, or, after get-ok, once the content is complete.
    func basicGet(channel id: UInt16, epoch: UInt64, queue: String, reply: @escaping GetState.Reply) {
        do throws(AMQPError) {
            let (channel, state) = try getChannel(id, epoch: epoch)
            guard state.waiter == nil else {
                throw AMQPError(.invalidArgument, "a get is already in progress on this channel", channel: id)
            }
            let arena = CArena()
            let name = try arena.shortString(queue, field: "queue name")
            let rpc = amqp_basic_get(connection, id, name, 0)
            guard rpc.reply_type == AMQP_RESPONSE_NORMAL, let decoded = rpc.reply.decoded else {
                try throwRPCError(rpc, channel: id, "getting a message from queue \"\(queue)\"")
            }
            switch rpc.reply.id {
            case AMQP_BASIC_GET_EMPTY_METHOD:
                dispatchQueuedFrames()
                reply(.success(nil))
                return
            case AMQP_BASIC_GET_OK_METHOD:
                let m = decoded.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
                // Copied out before any other library call can recycle the reply's pool.
                let start = ContentAssembler.Start.deliver(.init(
                    deliveryTag: m.delivery_tag, redelivered: m.redelivered != 0,
                    exchange: AMQPString(amqpBytes: m.exchange), routingKey: AMQPString(amqpBytes: m.routing_key)))
                try channel.assembler.begin(start)
                state.messageCount = m.message_count
                state.waiter = reply
            default:
                let error = AMQPError(.protocolError, "basic.get was answered with method \(rpc.reply.id)", channel: id)
                fail(error)
                throw error
            }
        } catch {
            reply(.failure(error))
            return
        }
        // The header and body may already sit in librabbitmq's queue; otherwise the next turns
        // of the loop read them.
        dispatchQueuedFrames()
    }

    /// The content of a get-ok is complete: the waiting get gets its message.
    func getCompleted(on channel: Channel, _ state: GetState) {
        guard let waiter = state.waiter, channel.assembler.completedDeliveryTag != nil else {
            logger.debug("content on a get channel with no get waiting", metadata: ["channel": "\(channel.id)"])
            return
        }
        state.waiter = nil
        let delivery = channel.assembler.takeDelivery(channel: channel.id, epoch: channel.epoch, consumerTag: "")
        state.unacked.insert(delivery.tag.value)
        waiter(.success(GotMessage(delivery: delivery, messageCount: state.messageCount)))
    }

    /// Settles one message this get channel received. Refuses (without sending anything) a tag
    /// of another channel incarnation, and a tag already settled or never received.
    func settleGot(_ tag: DeliveryTag, _ disposition: Disposition) throws(AMQPError) {
        let (_, state) = try getChannel(tag.channel, epoch: tag.epoch)
        guard state.unacked.remove(tag.value) != nil else {
            throw AMQPError(.invalidArgument, "delivery \(tag) was already settled, or never received on this channel", channel: tag.channel)
        }
        let status: Int32
        switch disposition {
        case .ack: status = amqp_basic_ack(connection, tag.channel, tag.value, 0)
        case .nack(let requeue): status = amqp_basic_nack(connection, tag.channel, tag.value, 0, requeue ? 1 : 0)
        case .reject(let requeue): status = amqp_basic_reject(connection, tag.channel, tag.value, requeue ? 1 : 0)
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            let error = libraryError(status, "settling delivery \(tag)")
            fail(error)
            throw error
        }
    }

    /// Closes the get channel; the broker requeues every message it still holds unacked.
    func closeGetChannel(channel id: UInt16, epoch: UInt64) throws(AMQPError) {
        try ensureUsable()
        guard let channel = channels[id], case .getter(let state) = channel.role, channel.lifecycle.isIncarnation(epoch) else { return }
        if channel.isOpen {
            state.fail(AMQPError(.closedByClient, "the get channel was closed while a message was arriving", channel: id))
        }
        try closeChannel(channel, epoch: epoch)
    }
}
