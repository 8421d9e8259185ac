internal import CRabbitMQ
import Glibc

// Reading frames and reacting to what the broker sends outside RPCs.
extension IOLoop {
    /// Reads and dispatches up to `limit` frames without blocking (library-queued frames first);
    /// returns how many it dispatched.
    @discardableResult
    func drainInput(limit: Int) -> Int {
        var frame = amqp_frame_t()
        var zero = Glibc.timeval(tv_sec: 0, tv_usec: 0)
        var count = 0
        turnFull = false
        while count < limit && isAlive && !turnFull {
            // Over plain TCP, once this turn has read and the library holds nothing more, what
            // is left is in the kernel, where the loop's wait sees it: asking the library
            // again would only cost a recv() that finds nothing and a poll() of its own, two
            // system calls per turn. The first call of a turn always goes through (it sends a
            // due heartbeat and notices a silent broker). Over TLS, OpenSSL may hold bytes it
            // has read and the kernel cannot report, so the library is asked until it has none.
            // The library hands out the frames it queued during an RPC first (`dispatch`).
            let queued = amqp_frames_enqueued(connection) != 0
            if isPlainTCP && count > 0 && !queued && amqp_data_in_buffer(connection) == 0 {
                return count
            }
            let status = amqp_simple_wait_frame_noblock(connection, &frame, &zero)
            if status == AMQP_STATUS_TIMEOUT.rawValue { return count }
            guard status == AMQP_STATUS_OK.rawValue else {
                fail(libraryError(status, "reading from the broker"))
                return count
            }
            dispatch(frame, queued: queued)
            count += 1
        }
        return count
    }

    /// Hands each consumer the deliveries of this turn, in one batch.
    func flushDeliveries() {
        guard !consumersWithPending.isEmpty else { return }
        for consumer in consumersWithPending {
            for delivery in consumer.flush() {
                // Nobody reads this consumer any more: give the message back now rather than
                // holding it until the channel closes.
                _ = consumer.settler.record(delivery.tag.value, .nack(requeue: true), now: 0)
                pendingSettlement.insert(delivery.tag.channel)
            }
        }
        consumersWithPending.removeAll(keepingCapacity: true)
    }

    /// Dispatches the frames librabbitmq queued while it waited for an RPC reply. Called right
    /// after every RPC, so that frames of a channel that the RPC just closed are dropped before
    /// its id can be reused.
    ///
    /// Then recycles the channel pools those frames sat in (everything was copied out, and no
    /// caller reads its RPC reply after this). A pool keeps its pages at its high-water mark, so
    /// without this, consumers started one after another on a busy connection would each keep
    /// the deliveries that arrived during all the later RPCs: 10 queues at prefetch 1000 held
    /// about 7 MiB of pages that way.
    func dispatchQueuedFrames() {
        var frame = amqp_frame_t()
        var zero = Glibc.timeval(tv_sec: 0, tv_usec: 0)
        while isAlive && amqp_frames_enqueued(connection) != 0 {
            let status = amqp_simple_wait_frame_noblock(connection, &frame, &zero)
            guard status == AMQP_STATUS_OK.rawValue else {
                if status != AMQP_STATUS_TIMEOUT.rawValue { fail(libraryError(status, "reading from the broker")) }
                return
            }
            dispatch(frame, queued: true)
        }
        if isAlive { amqp_maybe_release_buffers(connection) }
    }

    /// `queued`: the library queued the frame during an RPC. Its decoded parts live in the
    /// channel's pool, but its encoded properties (`raw`) pointed into the input buffer, which
    /// later reads have overwritten since.
    private func dispatch(_ frame: amqp_frame_t, queued: Bool) {
        switch Int32(frame.frame_type) {
        case AMQP_FRAME_METHOD:
            handleMethod(channel: frame.channel, method: frame.payload.method)
        case AMQP_FRAME_HEADER:
            guard let channel = channel(frame.channel), channel.isOpen else { return }
            let header = frame.payload.properties
            let properties = channel.recentProperties.properties(decoded: header.decoded, raw: queued ? amqp_empty_bytes : header.raw)
            assemble(channel) { assembler throws(AMQPError) in try assembler.receiveHeader(bodySize: header.body_size, properties: properties) }
        case AMQP_FRAME_BODY:
            guard let channel = channel(frame.channel), channel.isOpen else { return }
            let fragment = frame.payload.body_fragment
            let bytes = UnsafeRawBufferPointer(start: fragment.bytes, count: fragment.len)
            let spooling = channel.assembler.isSpooling
            assemble(channel) { assembler throws(AMQPError) in try assembler.receiveBody(bytes) }
            // The frame is in the file now. Its pool page goes back at once: pools keep their
            // high-water mark, and a turn reads up to `maxFramesPerTurn` frames, so an oversized
            // body would otherwise leave that many pages (of frame_max each) held by the channel.
            if spooling && isAlive { amqp_maybe_release_buffers_on_channel(connection, frame.channel) }
        default:
            break  // heartbeats are consumed by librabbitmq; nothing else is defined
        }
    }

    /// `step` says whether the message is complete; then it is taken from the assembler (or,
    /// if nothing takes it, dropped).
    private func assemble(_ channel: Channel, _ step: (inout ContentAssembler) throws(AMQPError) -> Bool) {
        do {
            guard try step(&channel.assembler) else { return }
            complete(on: channel)
            if channel.assembler.isComplete { channel.assembler.reset() }
        } catch {
            assemblyFailed(error, on: channel)
        }
    }

    private func assemblyFailed(_ error: AMQPError, on channel: Channel) {
        var error = error
        error.channel = channel.id
        fail(error)
    }

    /// Takes the message the channel's assembler completed.
    private func complete(on channel: Channel) {
        // One enum at a time: a switch over the pair copies both into a tuple, destroyed through
        // its metadata, for every delivery.
        switch channel.role {
        case .consumer(let consumer):
            guard let deliveryTag = channel.assembler.completedDeliveryTag else { break }
            switch channel.lifecycle.routeDelivery() {
            case .reader:
                break
            case .giveBack:
                consumer.settler.delivered(deliveryTag)
                _ = consumer.settler.record(deliveryTag, .nack(requeue: true), now: 0)
                pendingSettlement.insert(channel.id)
                return
            case .drop:
                return
            }
            consumer.settler.delivered(deliveryTag)
            // Half a window from the last ack: the turn reads no further, so that these
            // deliveries run and their ack leaves now, as a consumer acking every half window
            // would send it, not after the rest of what one read brought in (on average 8
            // deliveries later at prefetch 100, while the broker's credit ran down).
            if consumer.settler.completesHalfWindow(at: deliveryTag) { turnFull = true }
            // Moved, not copied, into the delivery, and the delivery into the consumer's batch
            // (passed as it is made: bound to a name first, it would be copied).
            if consumer.add(channel.assembler.takeDelivery(channel: channel.id, epoch: channel.epoch, consumerTag: consumer.consumerTag)) {
                consumersWithPending.append(consumer)
            }
            return
        case .publisher(let publisher):
            let message = channel.assembler.takeMessage()
            guard case .returned(let method) = message.start else { break }
            let matched = publisher.tracker.returned(
                messageID: message.properties.messageID, replyCode: method.replyCode, replyText: method.replyText)
            if !matched {
                logger.debug("basic.return matched no pending publish", metadata: [
                    "channel": "\(channel.id)", "routing_key": "\(method.routingKey)",
                ])
            }
            return
        case .getter(let getter):
            getCompleted(on: channel, getter)
            return
        case .control:
            break
        }
        logger.debug("content on a channel that does not expect it", metadata: ["channel": "\(channel.id)"])
    }

    private func handleMethod(channel id: UInt16, method: amqp_method_t) {
        guard let decoded = method.decoded else { return }
        switch method.id {
        case AMQP_BASIC_DELIVER_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            guard let channel = channel(id), channel.isOpen, case .consumer(let consumer) = channel.role else { return }
            // Begun in place, not through `assemble`: its closure would capture (copy) the method.
            do {
                try channel.assembler.begin(.deliver(.init(
                    deliveryTag: m.delivery_tag, redelivered: m.redelivered != 0,
                    exchange: consumer.exchange.string(m.exchange), routingKey: consumer.routingKey.string(m.routing_key))))
            } catch {
                assemblyFailed(error, on: channel)
            }

        case AMQP_BASIC_RETURN_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            guard let channel = channels[id], channel.isOpen else { return }
            let start = ContentAssembler.Start.returned(.init(
                replyCode: m.reply_code, replyText: String(amqpBytes: m.reply_text),
                exchange: String(amqpBytes: m.exchange), routingKey: String(amqpBytes: m.routing_key)))
            assemble(channel) { assembler throws(AMQPError) in
                try assembler.begin(start)
                return false
            }

        case AMQP_BASIC_ACK_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            guard let channel = channels[id], channel.isOpen, case .publisher(let publisher) = channel.role else { return }
            publisher.tracker.confirm(tag: m.delivery_tag, multiple: m.multiple != 0, positive: true, into: &resolutions)

        case AMQP_BASIC_NACK_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            guard let channel = channels[id], channel.isOpen, case .publisher(let publisher) = channel.role else { return }
            publisher.tracker.confirm(tag: m.delivery_tag, multiple: m.multiple != 0, positive: false, into: &resolutions)

        case AMQP_BASIC_CANCEL_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            guard let channel = channels[id] else {
                // A channel we no longer know: answer all the same, the broker waits for it.
                if m.nowait == 0 { sendCancelOk(id, m.consumer_tag) }
                return
            }
            let actions = channel.lifecycle.brokerCancelled(noWait: m.nowait != 0)
            if actions.contains(.sendCancelOk) { sendCancelOk(id, m.consumer_tag) }
            var error: AMQPError?
            if case .consumer(let consumer) = channel.role {
                error = AMQPError(
                    .consumerCancelled,
                    "the broker cancelled consumer \(consumer.consumerTag) of queue \(consumer.queue) (queue deleted, or its node failed over)",
                    channel: id, endpoint: negotiated.endpoint.description)
            }
            carryOut(actions, on: channel, error: error)

        case AMQP_CHANNEL_CLOSE_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            // close-ok must go out before the id can be opened again, or the broker closes the
            // whole connection with 504 "second 'channel.open' seen".
            var ok = amqp_channel_close_ok_t()
            sendMethod(id, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
            let error = AMQPError(
                .channelClosed, "the broker closed channel \(id)", replyCode: m.reply_code,
                replyText: String(amqpBytes: m.reply_text), classID: m.class_id, methodID: m.method_id,
                channel: id, endpoint: negotiated.endpoint.description)
            channelClosedByBroker(id, error)

        case AMQP_CONNECTION_CLOSE_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t()
            sendMethod(0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok)
            fail(AMQPError(
                .connectionClosed, "the broker closed the connection", replyCode: m.reply_code,
                replyText: String(amqpBytes: m.reply_text), classID: m.class_id, methodID: m.method_id,
                endpoint: negotiated.endpoint.description))

        case AMQP_CONNECTION_BLOCKED_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            carryOut(lifecycle.brokerBlocked(reason: String(amqpBytes: m.reason)))

        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            carryOut(lifecycle.brokerUnblocked())

        case AMQP_CHANNEL_FLOW_METHOD:
            let m = decoded.assumingMemoryBound(to: amqp_channel_flow_t.self).pointee
            var ok = amqp_channel_flow_ok_t(active: m.active)
            sendMethod(id, AMQP_CHANNEL_FLOW_OK_METHOD, &ok)

        default:
            logger.debug("ignoring an unexpected method", metadata: ["channel": "\(id)", "method": "\(method.id)"])
        }
    }

    /// The broker closed channel `id` (close-ok already sent). `answeringRPC`: the close was the
    /// reply to an RPC, whose caller gets the error, so it is not worth a warning or an event.
    func channelClosedByBroker(_ id: UInt16, _ error: AMQPError, answeringRPC: Bool = false) {
        guard let channel = channels[id] else { return }
        let actions = channel.lifecycle.brokerClosed(answeringRPC: answeringRPC)
        guard !actions.isEmpty else { return }
        if answeringRPC {
            logger.debug("channel closed by the broker in reply to an RPC", metadata: ["channel": "\(id)", "error": "\(error)"])
        } else {
            logger.warning("channel closed by the broker", metadata: ["channel": "\(id)", "error": "\(error)"])
        }
        carryOut(actions, on: channel, error: error)
    }

    /// Carries out what a channel's lifecycle decided, in order; the RPCs among the actions
    /// (`sendCancel`, `flushAndSendClose`) and cancel-ok are sent by the caller, which has
    /// what they need. `error` is why the channel or its subscription ended, when it was not
    /// on request.
    func carryOut(_ actions: [ChannelLifecycle.Action], on channel: Channel, error: AMQPError?) {
        for action in actions {
            switch action {
            case .discardUnsent:
                channel.assembler.reset()
                pendingSettlement.remove(channel.id)
            case .endDeliveries(let ending):
                guard case .consumer(let consumer) = channel.role else { continue }
                consumer.finish(throwing: ending == .requested ? nil : error)
            case .failInFlightPublishes:
                guard case .publisher(let publisher) = channel.role, let error else { continue }
                publisher.tracker.channelLost(error, into: &resolutions)
            case .failGet:
                guard case .getter(let getter) = channel.role else { continue }
                getter.fail(error ?? AMQPError(.closedByClient, "the get channel was closed", channel: channel.id))
            case .forget:
                if channels[channel.id] === channel { channels[channel.id] = nil }
                if case .control = channel.role, controlChannel == channel.id { controlChannel = nil }
            case .reportCancelled:
                guard case .consumer(let consumer) = channel.role else { continue }
                logger.warning("consumer cancelled by the broker", metadata: ["queue": "\(consumer.queue)", "channel": "\(channel.id)"])
                events.yield(.consumerCancelled(queue: consumer.queue, consumerTag: consumer.consumerTag, channel: channel.id))
            case .reportClosed:
                guard let error else { continue }
                events.yield(.channelClosed(channel: channel.id, error: error))
            case .sendCancelOk, .sendCancel, .flushAndSendClose:
                continue
            }
        }
    }

    private func sendCancelOk(_ channel: UInt16, _ consumerTag: amqp_bytes_t) {
        var ok = amqp_basic_cancel_ok_t(consumer_tag: consumerTag)
        sendMethod(channel, AMQP_BASIC_CANCEL_OK_METHOD, &ok)
    }

    func sendMethod(_ channel: UInt16, _ method: UInt32, _ decoded: UnsafeMutableRawPointer) {
        let status = amqp_send_method(connection, channel, method, decoded)
        if status != AMQP_STATUS_OK.rawValue {
            fail(libraryError(status, "sending method \(method) on channel \(channel)"))
        }
    }

    func libraryError(_ status: Int32, _ doing: String) -> AMQPError {
        let text = amqp_error_string2(status).map { String(cString: $0) } ?? "status \(status)"
        let code: AMQPError.Code
        switch status {
        case AMQP_STATUS_NO_MEMORY.rawValue, AMQP_STATUS_TIMER_FAILURE.rawValue: code = .library
        case AMQP_STATUS_BAD_AMQP_DATA.rawValue, AMQP_STATUS_UNKNOWN_CLASS.rawValue,
            AMQP_STATUS_UNKNOWN_METHOD.rawValue, AMQP_STATUS_UNEXPECTED_STATE.rawValue:
            code = .protocolError
        default: code = .connectionLost
        }
        return AMQPError(code, "\(doing) failed: \(text)", endpoint: negotiated.endpoint.description)
    }
}
