/// An AMQP field table: message headers, queue and exchange arguments.
///
/// Entries keep their wire order (a table is a list on the wire, and tests compare byte for byte);
/// lookups by key return the first entry with that key, as RabbitMQ does. Keys are short strings
/// and, like the properties, may hold any bytes (`AMQPString`); a lookup by `String` matches the
/// key whose bytes are that string's UTF-8.
public struct FieldTable: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral {
    public struct Entry: Sendable, Hashable {
        public var key: AMQPString
        public var value: FieldValue
        public init(_ key: AMQPString, _ value: FieldValue) {
            self.key = key
            self.value = value
        }
        public init(_ key: String, _ value: FieldValue) {
            self.key = AMQPString(key)
            self.value = value
        }
    }

    public private(set) var entries: [Entry]

    /// Tables and arrays nested deeper than this in a received message are read as void
    /// (a message's headers are depth 0, a table inside them depth 1, ...).
    public static let maximumDepth = 32

    public init() { entries = [] }
    public init(_ entries: [Entry]) { self.entries = entries }
    public init(dictionaryLiteral elements: (String, FieldValue)...) {
        entries = elements.map { Entry($0.0, $0.1) }
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    public subscript(key: String) -> FieldValue? {
        get { entries.first { $0.key.hasBytes(of: key) }?.value }
        set { self[AMQPString(key)] = newValue }
    }

    public subscript(key: AMQPString) -> FieldValue? {
        get { entries.first { $0.key == key }?.value }
        set {
            if let index = entries.firstIndex(where: { $0.key == key }) {
                if let newValue {
                    entries[index].value = newValue
                } else {
                    entries.remove(at: index)
                }
            } else if let newValue {
                entries.append(Entry(key, newValue))
            }
        }
    }

    public func makeIterator() -> IndexingIterator<[Entry]> { entries.makeIterator() }
}
