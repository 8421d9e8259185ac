internal import CRabbitMQ

// Settlements and publishes: recorded from the command batch, sent once per loop turn.
extension IOLoop {
    func record(_ settle: CommandQueue.Settle, now: UInt64) {
        let tag = settle.tag
        // A settlement for another channel incarnation is dropped: its delivery went back to the
        // queue when that incarnation closed, and its tag means nothing (or something else) now.
        guard let channel = channel(tag.channel), channel.lifecycle.accepts(settlementOf: tag.epoch),
            case .consumer(let consumer) = channel.role
        else {
            logger.trace("dropping a settlement for a closed channel", metadata: ["delivery_tag": "\(tag)"])
            return
        }
        switch consumer.settler.record(tag.value, settle.disposition, now: now) {
        case .accepted:
            pendingSettlement.insert(channel.id)
        case .alreadySettled:
            logger.warning("ignoring a second settlement of a delivery", metadata: ["delivery_tag": "\(tag)"])
        case .unknownTag:
            logger.warning("ignoring a settlement of a tag never delivered", metadata: ["delivery_tag": "\(tag)"])
        }
    }

    func flushSettlements(now: UInt64) {
        guard !pendingSettlement.isEmpty else { return }
        pendingSettlement.keep { id in isAlive && flushSettlements(of: id, now: now) }
    }

    /// Sends what channel `id`'s settler lets go now; whether it still holds some.
    private func flushSettlements(of id: UInt16, now: UInt64) -> Bool {
        guard let channel = channel(id), channel.lifecycle.sendsSettlements, case .consumer(let consumer) = channel.role else {
            return false
        }
        settleActions.removeAll(keepingCapacity: true)
        consumer.settler.flush(now: now, into: &settleActions)
        for action in settleActions {
            let status: Int32
            switch action {
            case .ack(let tag, let multiple):
                status = amqp_basic_ack(connection, id, tag, multiple ? 1 : 0)
            case .nack(let tag, let multiple, let requeue):
                status = amqp_basic_nack(connection, id, tag, multiple ? 1 : 0, requeue ? 1 : 0)
            case .reject(let tag, let requeue):
                status = amqp_basic_reject(connection, id, tag, requeue ? 1 : 0)
            }
            guard status == AMQP_STATUS_OK.rawValue else {
                fail(libraryError(status, "settling deliveries on channel \(id)"))
                return true
            }
        }
        return consumer.settler.finishedCount > 0
    }

    func enqueue(_ publish: CommandQueue.Publish) {
        guard let channel = channels[publish.channel], case .publisher(let publisher) = channel.role else {
            publish.waiter(.failure(AMQPError(.invalidArgument, "channel \(publish.channel) is not a publisher channel")))
            return
        }
        publisher.tracker.enqueue(
            publish.message, waiter: publish.waiter, messageID: publish.message.properties.messageID,
            deadline: publish.deadline)
    }

    func expirePublishes(now: UInt64) {
        for channel in publisherChannels {
            guard case .publisher(let publisher) = channel.role else { continue }
            publisher.tracker.expire(now: now, into: &resolutions)
        }
    }

    func sendPublishes() {
        guard lifecycle.mayPublish else { return }
        for channel in publisherChannels {
            guard case .publisher(let publisher) = channel.role, publisher.tracker.unsentCount > 0 else { continue }
            if !channel.isOpen {
                reopenPublisher(channel, publisher)
                guard channel.isOpen else { continue }
            }
            while isAlive, let (ticket, message) = publisher.tracker.nextToSend() {
                let status: Int32
                do {
                    status = try basicPublish(channel.id, message)
                } catch {
                    // Rejected before anything was written (an over-long short string, say).
                    if let waiter = publisher.tracker.abandon(ticket) {
                        resolutions.append(.init(waiter: waiter, result: .failure(error)))
                    }
                    continue
                }
                guard status == AMQP_STATUS_OK.rawValue else {
                    publisher.tracker.putBack(ticket, message)
                    fail(libraryError(status, "publishing on channel \(channel.id)"))
                    return
                }
                publisher.tracker.sent(ticket)
            }
        }
    }

    private func basicPublish(_ channel: UInt16, _ message: OutgoingMessage) throws(AMQPError) -> Int32 {
        let arena = CArena()
        let exchange = try arena.shortString(message.exchange, field: "exchange name")
        let routingKey = try arena.shortString(message.routingKey, field: "routing key")
        var properties = try arena.properties(message.properties)
        let send = { (body: UnsafeRawBufferPointer) -> Int32 in
            amqp_basic_publish(
                self.connection, channel, exchange, routingKey, message.mandatory ? 1 : 0, 0, &properties,
                amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
        }
        if let spooled = message.spooledBody {
            return try spooled.withMappedBytes(send)
        }
        return message.body.withUnsafeBytes(send)
    }

    private func reopenPublisher(_ channel: Channel, _ publisher: PublisherState) {
        do {
            try openChannel(channel.id)
            guard amqp_confirm_select(connection, channel.id) != nil else {
                try rpcFailed(channel: channel.id, "confirm.select")
            }
            dispatchQueuedFrames()
            channel.lifecycle.reopened(epoch: nextChannelEpoch())
            logger.info("publisher channel reopened", metadata: ["channel": "\(channel.id)"])
        } catch {
            logger.warning("cannot reopen the publisher channel", metadata: ["channel": "\(channel.id)", "error": "\(error)"])
            publisher.tracker.failAll(error, into: &resolutions)
        }
    }
}
