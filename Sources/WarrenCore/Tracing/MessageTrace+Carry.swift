import AMQP

/// Carrying a context forward in what warren publishes (docs/tracing.md, "What is carried
/// forward"): a message warren publishes while processing a delivery continues the delivery's
/// trace, so a message retried three times, then parked, is one trace.
extension MessageTrace {
    /// Sets `traceparent` (and `tracestate`, or removes one) to this context. `replacing`: a copy
    /// of the input (retry, dead-letter, `republish`), whose headers are the input's and may hold
    /// an invalid `traceparent` this trace replaced; otherwise a handler's output, which keeps a
    /// `traceparent` of its own (and its `tracestate` with it).
    public func stamp(_ headers: inout FieldTable?, replacing: Bool) {
        var table = headers ?? FieldTable()
        guard replacing || table[Self.traceparentHeader] == nil else { return }
        table[Self.traceparentHeader] = .string(traceparent)
        table[Self.tracestateHeader] = state.map { .string($0) }
        headers = table
    }

    /// The message with this context in its headers (see `stamp(_:replacing:)`).
    public func stamped(_ message: OutgoingMessage, replacing: Bool) -> OutgoingMessage {
        var message = message
        stamp(&message.properties.headers, replacing: replacing)
        return message
    }
}

extension HandlerOutcome {
    /// The outcome with the run's context on what it publishes: each output that sets no
    /// `traceparent` of its own gets the run's, and the reply (built later, from the delivery's
    /// `reply_to`) will.
    func tracing(_ run: MessageTrace) -> HandlerOutcome {
        // Most outcomes publish nothing: returned as they are, not taken apart and rebuilt.
        switch self {
        case .success(let output) where output.publishesSomething:
            return .success(output.tracing(run))
        case .verdict(let verdict, let error, let output, let details) where output.publishesSomething:
            return .verdict(verdict, error: error, output: output.tracing(run), details: details)
        default:
            return self
        }
    }
}

extension HandlerOutput {
    func tracing(_ run: MessageTrace) -> HandlerOutput {
        guard publishesSomething else { return self }
        var output = self
        // Stamped in a local copy, then stored once: each write to `publishes` makes a new box.
        var publishes = output.publishes
        for index in publishes.indices {
            run.stamp(&publishes[index].properties.headers, replacing: false)
        }
        if !publishes.isEmpty { output.publishes = publishes }
        if output.reply != nil && output.replyTrace == nil { output.replyTrace = run }
        return output
    }

    /// The properties of the RPC reply: the request's correlation id, and the context of the run
    /// that produced the reply.
    func replyProperties(correlationID: AMQPString?) -> BasicProperties {
        var properties = BasicProperties(correlationID: correlationID)
        replyTrace?.stamp(&properties.headers, replacing: true)
        return properties
    }
}

extension HandlerInput {
    /// The input of another handler run of the same delivery (a fan-out): a span of its own.
    func nextRun(_ handler: String) -> HandlerInput {
        var input = self
        if let delivery = tracing?.delivery {
            input.startRun(handler, in: delivery)
        } else {
            input.trace = deliveryTrace.child()
        }
        return input
    }

    /// With spans exported: this run's span, whose context becomes the run's `trace` (what the
    /// handler receives and its outputs carry).
    mutating func startRun(_ handler: String, in delivery: TracedDelivery) {
        let run = delivery.startRun(handler)
        tracing = run
        trace = run.run.trace
    }
}
