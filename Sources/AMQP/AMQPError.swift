/// The one error type of the AMQP module.
///
/// It carries what an operator needs to act: the broker's reply code and text when the broker
/// closed something, the channel, and the (redacted) endpoint. `code` says which kind of failure
/// it was; it is a struct rather than an enum so that new kinds do not break callers' switches.
public struct AMQPError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// No endpoint could be reached or the AMQP handshake failed.
        public static let connectFailed = Code("connect_failed")
        /// The broker refused the credentials (ACCESS_REFUSED during login).
        public static let authenticationFailed = Code("authentication_failed")
        /// The broker closed the connection (`connection.close`, with reply code and text).
        public static let connectionClosed = Code("connection_closed")
        /// The socket failed, the peer went away, or heartbeats stopped arriving.
        public static let connectionLost = Code("connection_lost")
        /// This process closed the connection (or is closing it); the operation did not run.
        public static let closedByClient = Code("closed_by_client")
        /// The broker closed a channel (`channel.close`, with reply code and text).
        public static let channelClosed = Code("channel_closed")
        /// The broker cancelled a consumer (`basic.cancel`): its queue was deleted, or failover.
        public static let consumerCancelled = Code("consumer_cancelled")
        /// The peer violated the protocol (a content frame out of sequence, say).
        public static let protocolError = Code("protocol_error")
        /// A caller passed something that cannot be sent (an over-long short string, say).
        public static let invalidArgument = Code("invalid_argument")
        /// TLS could not be set up (CA file, client certificate, verification).
        public static let tls = Code("tls")
        /// librabbitmq reported an internal failure (out of memory, timer failure).
        public static let library = Code("library")
        /// The body of an oversized delivery could not be kept in a temporary file (no temporary
        /// directory, disk full).
        public static let spoolFailed = Code("spool_failed")
    }

    public var code: Code
    /// A sentence that stands on its own in a log line.
    public var message: String
    /// The AMQP reply code (404 NOT_FOUND, 406 PRECONDITION_FAILED, 320 CONNECTION_FORCED, ...)
    /// when the broker closed a channel or the connection.
    public var replyCode: UInt16?
    /// The broker's reply text, verbatim.
    public var replyText: String?
    /// The AMQP class and method that caused a broker-side close, when the broker named one.
    public var classID: UInt16?
    public var methodID: UInt16?
    public var channel: UInt16?
    /// The endpoint, with any password redacted.
    public var endpoint: String?

    public init(
        _ code: Code, _ message: String, replyCode: UInt16? = nil, replyText: String? = nil,
        classID: UInt16? = nil, methodID: UInt16? = nil, channel: UInt16? = nil, endpoint: String? = nil
    ) {
        self.code = code
        self.message = message
        self.replyCode = replyCode
        self.replyText = replyText
        self.classID = classID
        self.methodID = methodID
        self.channel = channel
        self.endpoint = endpoint
    }

    public var description: String {
        var text = message
        if let replyCode, let replyText {
            text += " (\(replyCode) \(replyText))"
        }
        if let channel, channel != 0 { text += " [channel \(channel)]" }
        if let endpoint { text += " [\(endpoint)]" }
        return text
    }
}
