// A Warren handler plugin in Swift (README, "plugin"): the C ABI of warren_plugin.h, exported with
// @_cdecl. SwiftPM builds it as libWarrenDemoPluginSwift.so and the test suite exercises it. It
// behaves like the C example (Examples/plugins/c/demo_plugin.c), with a reply prefix and the
// same x-demo-* headers:
//
//     config = { prefix = "text", fail_init = true }
//     x-demo-verdict   ack (default) | reject | requeue | retry | error | bogus
//     x-demo-delay-ms  the retry delay
//     x-demo-sleep-ms  block this long first
//     x-demo-reply     "thread" | "stats" | "view"
//
// A Swift plugin must be built by the same Swift toolchain as warren: both load one Swift runtime.

import Foundation
import Synchronization
import WarrenPlugin

/// One `[handlers.NAME]` entry's state. `handle` runs on several threads at once, so everything
/// here is immutable or atomic.
final class DemoPlugin {
    let prefix: [UInt8]
    let messages = Atomic<Int>(0)
    let running = Atomic<Int>(0)
    let mostRunning = Atomic<Int>(0)
    /// Error texts handed to Warren must outlive the call; these live as long as the state.
    let rejected = strdup("rejected by the Swift demo plugin")
    let retry = strdup("the Swift demo plugin asks for a retry")
    let failed = strdup("the Swift demo plugin failed")

    init(prefix: String) {
        self.prefix = Array(prefix.utf8)
    }

    deinit {
        free(rejected)
        free(retry)
        free(failed)
    }

    struct Configuration: Decodable {
        var prefix: String?
        var failInit: Bool?

        enum CodingKeys: String, CodingKey {
            case prefix
            case failInit = "fail_init"
        }
    }

    func handle(_ message: warren_message, _ result: inout warren_result) {
        let count = messages.add(1, ordering: .relaxed).newValue
        let now = running.add(1, ordering: .relaxed).newValue
        defer { running.subtract(1, ordering: .relaxed) }
        var most = mostRunning.load(ordering: .relaxed)
        while now > most {
            let (exchanged, original) = mostRunning.compareExchange(expected: most, desired: now, ordering: .relaxed)
            if exchanged { break }
            most = original
        }

        let headers = Self.headers(message.headers_json)
        if let ms = headers["x-demo-sleep-ms"].flatMap({ Int("\($0)") }), ms > 0 {
            Thread.sleep(forTimeInterval: Double(ms) / 1000)
        }
        switch headers["x-demo-verdict"].map({ "\($0)" }) ?? "ack" {
        case "reject":
            result.verdict = WARREN_VERDICT_REJECT
            result.error = UnsafePointer(rejected)
        case "requeue":
            result.verdict = WARREN_VERDICT_REQUEUE
        case "retry":
            result.verdict = WARREN_VERDICT_RETRY
            result.delay_ms = headers["x-demo-delay-ms"].flatMap { UInt64("\($0)") } ?? 0
            result.error = UnsafePointer(retry)
        case "error":
            result.verdict = WARREN_VERDICT_ERROR
            result.error = UnsafePointer(failed)
        case "bogus":
            result.verdict = warren_verdict(rawValue: 42)
        default:
            switch headers["x-demo-reply"].map({ "\($0)" }) {
            case "thread":
                result.reply = Self.reply(Array("thread=\(Self.threadName())".utf8))
            case "view":
                result.reply = Self.reply(Array(Self.view(message).utf8))
            case "stats":
                result.reply = Self.reply(Array("messages=\(count) most_running=\(mostRunning.load(ordering: .relaxed))".utf8))
            default:
                let body = UnsafeBufferPointer(start: message.body.data, count: message.body.len)
                result.reply = Self.reply(prefix + body.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 })
            }
        }
    }

    static func threadName() -> String {
        #if os(Linux)
        // Glibc's module does not export pthread_getname_np (a _GNU_SOURCE function).
        let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
        return name.trimmingCharacters(in: .newlines)
        #else
        var name = [CChar](repeating: 0, count: 64)
        pthread_getname_np(pthread_self(), &name, name.count)
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #endif
    }

    /// Every field of the message view, one `name=value` line each.
    static func view(_ m: warren_message) -> String {
        func text(_ bytes: warren_bytes) -> String {
            String(decoding: UnsafeBufferPointer(start: bytes.data, count: bytes.len), as: UTF8.self)
        }
        return [
            "queue=\(text(m.queue))", "exchange=\(text(m.exchange))", "routing_key=\(text(m.routing_key))",
            "redelivered=\(m.redelivered)", "attempt=\(m.attempt)", "message_id=\(text(m.message_id))",
            "correlation_id=\(text(m.correlation_id))", "reply_to=\(text(m.reply_to))", "content_type=\(text(m.content_type))",
            "type=\(text(m.type))", "timestamp=\(m.timestamp)", "headers=\(text(m.headers_json))", "body=\(text(m.body))",
        ].joined(separator: "\n")
    }

    static func headers(_ json: warren_bytes) -> [String: Any] {
        guard let data = json.data else { return [:] }
        let bytes = Data(UnsafeBufferPointer(start: data, count: json.len))
        return (try? JSONSerialization.jsonObject(with: bytes)) as? [String: Any] ?? [:]
    }

    /// The reply must outlive `handle` until the next call on the same thread: one heap buffer
    /// per thread, replaced on each call and freed by the key's destructor when the thread ends.
    static let replyKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    static func reply(_ bytes: [UInt8]) -> warren_bytes {
        free(pthread_getspecific(replyKey))
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: max(bytes.count, 1))
        buffer.initialize(from: bytes, count: bytes.count)
        pthread_setspecific(replyKey, buffer)
        return warren_bytes(data: buffer, len: bytes.count)
    }
}

/// The table Warren reads once; allocated on first use and never freed (the library is never
/// unloaded while warren runs). Immutable after initialisation, hence safe to share.
nonisolated(unsafe) let pluginTable: UnsafeMutablePointer<warren_plugin_v1_t> = {
    let table = UnsafeMutablePointer<warren_plugin_v1_t>.allocate(capacity: 1)
    table.initialize(to: warren_plugin_v1_t(
        abi_version: WARREN_PLUGIN_ABI_VERSION,
        init: { configJSON, state in
            guard let configJSON, let state else { return 1 }
            let configuration = try? JSONDecoder().decode(DemoPlugin.Configuration.self, from: Data(String(cString: configJSON).utf8))
            guard let configuration else { return 1 }
            if configuration.failInit == true { return 2 }
            state.pointee = Unmanaged.passRetained(DemoPlugin(prefix: configuration.prefix ?? "")).toOpaque()
            return 0
        },
        handle: { state, message, result in
            guard let state, let message, let result else { return }
            Unmanaged<DemoPlugin>.fromOpaque(state).takeUnretainedValue().handle(message.pointee, &result.pointee)
        },
        destroy: { state in
            guard let state else { return }
            Unmanaged<DemoPlugin>.fromOpaque(state).release()
        }))
    return table
}()

@_cdecl("warren_plugin_v1")
public func warrenPluginV1() -> UnsafePointer<warren_plugin_v1_t> {
    UnsafePointer(pluginTable)
}
