import AMQP

/// How a short string of a message (exchange, routing key, `message_id`, `correlation_id`,
/// `reply_to`, `content_type`, `type`) reaches a handler through a channel that carries text.
///
/// AMQP lets a producer put any bytes in these strings. One rule, for every sink: a value the
/// sink can carry unchanged goes out as it is under its usual name; any other value goes out
/// in base64 under the same name with a `_base64` suffix (`-Base64` for HTTP headers), and the
/// usual name is absent. A handler therefore never sees a value that was silently altered,
/// and can tell "this property has these exact bytes" from "this property is absent" or "this
/// property is empty". What each sink can carry (see docs/message-bytes.md):
/// - JSON (pipe requests, the file handler, `WARREN_HEADERS`, plugin `headers_json`): valid
///   UTF-8; control characters are escaped by JSON itself.
/// - The exec environment: valid UTF-8 without NUL (a C string ends at its first NUL).
/// - HTTP request headers: valid UTF-8 without control characters other than tab (a header
///   value cannot hold CR, LF or NUL).
/// Plugins get pointer and length, so every byte reaches them unchanged.
enum SinkText {
    enum Form: Equatable {
        /// Unchanged.
        case plain(String)
        /// The exact bytes in base64, for the `_base64` name.
        case base64(String)
    }

    static func json(_ value: AMQPString) -> Form {
        form(value) { _ in true }
    }

    static func environment(_ value: AMQPString) -> Form {
        form(value) { $0 != 0 }
    }

    static func httpHeader(_ value: AMQPString) -> Form {
        form(value) { ($0 >= 0x20 && $0 != 0x7F) || $0 == UInt8(ascii: "\t") }
    }

    private static func form(_ value: AMQPString, allows: (UInt8) -> Bool) -> Form {
        if let text = value.text, text.utf8.allSatisfy(allows) { return .plain(text) }
        return .base64(value.base64)
    }
}
