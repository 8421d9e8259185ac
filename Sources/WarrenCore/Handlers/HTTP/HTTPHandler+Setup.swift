import NIOHTTP1

/// What `HTTPHandler` decides once, at start-up: the connection pool's size and the configured
/// headers, checked so that a request can never fail on them (and an error can never quote them).
extension HTTPHandler {
    /// The connections worth keeping to the webhook: one per concurrent run of the handler,
    /// i.e. the summed `concurrency` of the queues whose handler or routes name it.
    static func poolSize(for handler: String, in configuration: Configuration) -> Int {
        let concurrency = configuration.queues
            .filter { $0.handlerNames.contains(handler) }
            .reduce(0) { $0 + $1.concurrency }
        return max(1, concurrency)
    }

    /// Header names must be RFC 9110 tokens and values may hold no control character but HTAB.
    /// AsyncHTTPClient would refuse such a request on every message; refusing at start-up says
    /// so once, naming the header but never its value (a header may hold a secret).
    static func validated(_ headers: [String: String], handler: String) throws(HandlerRegistry.SetupError) -> HTTPHeaders {
        var result = HTTPHeaders()
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
            guard !name.isEmpty, name.utf8.allSatisfy(isTokenCharacter) else {
                throw HandlerRegistry.SetupError(handler: handler, message: "headers: \"\(name)\" is not a valid HTTP header name")
            }
            guard value.utf8.allSatisfy({ $0 == UInt8(ascii: "\t") || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw HandlerRegistry.SetupError(handler: handler, message: "headers.\(name): the value contains a control character")
            }
            result.add(name: name, value: value)
        }
        return result
    }

    /// A header value made from message data (routing key, message id, content type), which may
    /// hold any byte: control characters become spaces, as RFC 9110 §5.5 asks of recipients,
    /// instead of failing the request.
    static func fieldValue(_ text: String) -> String {
        guard text.utf8.contains(where: { ($0 < 0x20 && $0 != UInt8(ascii: "\t")) || $0 == 0x7F }) else { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.map { scalar in
            (scalar.value < 0x20 && scalar != "\t") || scalar.value == 0x7F ? " " : scalar
        }))
    }

    /// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    private static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}
