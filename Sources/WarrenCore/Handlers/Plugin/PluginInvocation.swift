import AMQP
import Foundation
internal import WarrenPlugin

/// One call of a plugin's `handle`, on a pool thread: builds the `warren_message` view, calls,
/// and copies the result out of the plugin's memory.
///
/// The view's pointers are valid only during the call: the body is pinned where it
/// is, and the short texts (routing data, properties, headers as JSON) are packed into one
/// buffer per call, so a call costs one allocation besides the headers' JSON.
enum PluginInvocation {
    static func call(_ library: PluginLibrary, state: UnsafeMutableRawPointer?, _ input: HandlerInput) -> PluginReturn {
        let p = input.properties
        var texts = TextPack()
        let queue = texts.add(input.queue)
        let exchange = texts.add(input.exchange)
        let routingKey = texts.add(input.routingKey)
        let messageID = texts.add(p.messageID)
        let correlationID = texts.add(p.correlationID)
        let replyTo = texts.add(p.replyTo)
        let contentType = texts.add(p.contentType)
        let type = texts.add(p.type)
        let headers = texts.add(MessageJSON.headersJSON(p.headers))
        let traceparent = texts.add(input.trace.traceparent)
        let tracestate = texts.add(input.trace.state)
        return input.body.withUnsafeBufferPointer { body in
            texts.bytes.withUnsafeBufferPointer { packed in
                func view(_ range: Range<Int>) -> warren_bytes {
                    warren_bytes(data: range.isEmpty ? nil : packed.baseAddress.map { $0 + range.lowerBound }, len: range.count)
                }
                var message = warren_message(
                    body: warren_bytes(data: body.baseAddress, len: body.count), queue: view(queue), exchange: view(exchange),
                    routing_key: view(routingKey), redelivered: input.redelivered ? 1 : 0, attempt: UInt32(clamping: input.attempt),
                    message_id: view(messageID), correlation_id: view(correlationID), reply_to: view(replyTo),
                    content_type: view(contentType), type: view(type), timestamp: p.timestamp.map { Int64(clamping: $0) } ?? -1,
                    headers_json: view(headers), stream_offset: input.streamOffset ?? -1, traceparent: view(traceparent),
                    tracestate: view(tracestate))
                // Zero-filled: a plugin that sets nothing acks, and one built before `reply` was
                // appended to the struct leaves it empty.
                var result = warren_result()
                library.handle(state, &message, &result)
                return PluginReturn(copying: result)
            }
        }
    }

    /// Short texts packed back to back; each `add` returns where its text lies.
    private struct TextPack {
        var bytes: [UInt8] = []

        init() { bytes.reserveCapacity(256) }

        mutating func add(_ text: String?) -> Range<Int> {
            guard let text else { return 0..<0 }
            let start = bytes.count
            bytes.append(contentsOf: text.utf8)
            return start..<bytes.count
        }

        /// The exact bytes: the view is pointer and length, so a short string that is not
        /// UTF-8, or holds NUL, reaches the plugin as it came.
        mutating func add(_ value: AMQPString?) -> Range<Int> {
            guard let value else { return 0..<0 }
            let start = bytes.count
            value.withBytes { bytes.append(contentsOf: $0) }
            return start..<bytes.count
        }

        mutating func add(_ raw: [UInt8]) -> Range<Int> {
            let start = bytes.count
            bytes.append(contentsOf: raw)
            return start..<bytes.count
        }
    }
}
