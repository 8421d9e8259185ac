internal import CRabbitMQ
import Glibc

// Conversions between librabbitmq's C structures and Warren's Swift values. Everything decoded
// here is copied: pointers inside a frame are valid only until the next library call on the
// connection.

extension String {
    /// For texts the broker writes (reply texts, consumer tags), never for message data: a
    /// message's short strings are `AMQPString`s, which keep their exact bytes.
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = ""
            return
        }
        self = String(decoding: UnsafeRawBufferPointer(start: base, count: bytes.len), as: UTF8.self)
    }
}

extension AMQPString {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = ""
            return
        }
        // Typed, so that validation reads the buffer in place (contiguous storage).
        self.init(bytes: UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: bytes.len))
    }
}

extension Array where Element == UInt8 {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = []
            return
        }
        self = Array(UnsafeRawBufferPointer(start: base, count: bytes.len))
    }
}

enum FieldKind {
    static let boolean = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
    static let i8 = UInt8(AMQP_FIELD_KIND_I8.rawValue)
    static let u8 = UInt8(AMQP_FIELD_KIND_U8.rawValue)
    static let i16 = UInt8(AMQP_FIELD_KIND_I16.rawValue)
    static let u16 = UInt8(AMQP_FIELD_KIND_U16.rawValue)
    static let i32 = UInt8(AMQP_FIELD_KIND_I32.rawValue)
    static let u32 = UInt8(AMQP_FIELD_KIND_U32.rawValue)
    static let i64 = UInt8(AMQP_FIELD_KIND_I64.rawValue)
    static let u64 = UInt8(AMQP_FIELD_KIND_U64.rawValue)
    static let f32 = UInt8(AMQP_FIELD_KIND_F32.rawValue)
    static let f64 = UInt8(AMQP_FIELD_KIND_F64.rawValue)
    static let decimal = UInt8(AMQP_FIELD_KIND_DECIMAL.rawValue)
    static let utf8 = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
    static let array = UInt8(AMQP_FIELD_KIND_ARRAY.rawValue)
    static let timestamp = UInt8(AMQP_FIELD_KIND_TIMESTAMP.rawValue)
    static let table = UInt8(AMQP_FIELD_KIND_TABLE.rawValue)
    static let void = UInt8(AMQP_FIELD_KIND_VOID.rawValue)
    static let bytes = UInt8(AMQP_FIELD_KIND_BYTES.rawValue)
}

extension FieldTable {
    /// `depth` counts the tables and arrays around this one (0 for a message's headers).
    init(amqpTable table: amqp_table_t, depth: Int = 0) {
        var entries: [Entry] = []
        entries.reserveCapacity(Int(clamping: Swift.max(table.num_entries, 0)))
        if let base = table.entries, table.num_entries > 0 {
            for index in 0..<Int(table.num_entries) {
                let entry = base[index]
                entries.append(Entry(AMQPString(amqpBytes: entry.key), FieldValue(amqpValue: entry.value, depth: depth &+ 1)))
            }
        }
        self.init(entries)
    }
}

extension FieldValue {
    init(amqpValue field: amqp_field_value_t, depth: Int = 0) {
        // A producer can nest tables thousands of levels deep in one frame. Past the limit a
        // nested table or array becomes void: every later walk over the value (copies, hashing,
        // the last release) stays shallow, whatever the message holds (docs/delivery.md).
        if depth > FieldTable.maximumDepth && (field.kind == FieldKind.table || field.kind == FieldKind.array) {
            self = .void
            return
        }
        let v = field.value
        switch field.kind {
        case FieldKind.boolean: self = .boolean(v.boolean != 0)
        case FieldKind.i8: self = .int8(v.i8)
        case FieldKind.u8: self = .uint8(v.u8)
        case FieldKind.i16: self = .int16(v.i16)
        case FieldKind.u16: self = .uint16(v.u16)
        case FieldKind.i32: self = .int32(v.i32)
        case FieldKind.u32: self = .uint32(v.u32)
        case FieldKind.i64: self = .int64(v.i64)
        case FieldKind.u64: self = .uint64(v.u64)
        case FieldKind.f32: self = .float(v.f32)
        case FieldKind.f64: self = .double(v.f64)
        case FieldKind.decimal: self = .decimal(scale: v.decimal.decimals, value: v.decimal.value)
        case FieldKind.timestamp: self = .timestamp(v.u64)
        case FieldKind.utf8:
            // Validated in place: valid UTF-8 (the usual case) costs no intermediate array.
            let raw = UnsafeBufferPointer(start: v.bytes.bytes?.assumingMemoryBound(to: UInt8.self), count: v.bytes.bytes == nil ? 0 : v.bytes.len)
            if let text = AMQPString.text(ifValid: raw) {
                self = .string(text)
            } else {
                self = .nonUTF8String(Array(raw))
            }
        case FieldKind.bytes: self = .bytes([UInt8](amqpBytes: v.bytes))
        case FieldKind.table: self = .table(FieldTable(amqpTable: v.table, depth: depth))
        case FieldKind.array:
            var values: [FieldValue] = []
            if let base = v.array.entries, v.array.num_entries > 0 {
                values.reserveCapacity(Int(v.array.num_entries))
                for index in 0..<Int(v.array.num_entries) {
                    values.append(FieldValue(amqpValue: base[index], depth: depth &+ 1))
                }
            }
            self = .array(values)
        default: self = .void
        }
    }
}

extension BasicProperties {
    init(amqpProperties p: amqp_basic_properties_t) {
        let flags = p._flags
        guard flags != 0 else {
            self.init()
            return
        }
        func has(_ flag: Int32) -> Bool { flags & amqp_flags_t(UInt32(bitPattern: flag)) != 0 }
        func string(_ flag: Int32, _ bytes: amqp_bytes_t) -> AMQPString? { has(flag) ? AMQPString(amqpBytes: bytes) : nil }
        // One box for all of them, not one copy per property set.
        self.init(
            contentType: string(AMQP_BASIC_CONTENT_TYPE_FLAG, p.content_type),
            contentEncoding: string(AMQP_BASIC_CONTENT_ENCODING_FLAG, p.content_encoding),
            headers: has(AMQP_BASIC_HEADERS_FLAG) ? FieldTable(amqpTable: p.headers) : nil,
            deliveryMode: has(AMQP_BASIC_DELIVERY_MODE_FLAG) ? p.delivery_mode : nil,
            priority: has(AMQP_BASIC_PRIORITY_FLAG) ? p.priority : nil,
            correlationID: string(AMQP_BASIC_CORRELATION_ID_FLAG, p.correlation_id),
            replyTo: string(AMQP_BASIC_REPLY_TO_FLAG, p.reply_to),
            expiration: string(AMQP_BASIC_EXPIRATION_FLAG, p.expiration),
            messageID: string(AMQP_BASIC_MESSAGE_ID_FLAG, p.message_id),
            timestamp: has(AMQP_BASIC_TIMESTAMP_FLAG) ? p.timestamp : nil,
            type: string(AMQP_BASIC_TYPE_FLAG, p.type),
            userID: string(AMQP_BASIC_USER_ID_FLAG, p.user_id),
            appID: string(AMQP_BASIC_APP_ID_FLAG, p.app_id),
            clusterID: string(AMQP_BASIC_CLUSTER_ID_FLAG, p.cluster_id))
    }
}

/// Owns the C memory of one outgoing call's strings and tables; freed when the arena goes away.
/// Confined to the I/O thread, used for the duration of one library call.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for pointer in allocations { free(pointer) }
    }

    private func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        guard let pointer = malloc(Swift.max(size, 1)) else {
            fatalError("CArena: out of memory allocating \(size) bytes")
        }
        allocations.append(pointer)
        return pointer
    }

    func bytes<C: Collection>(_ source: C) -> amqp_bytes_t where C.Element == UInt8 {
        let count = source.count
        guard count > 0 else { return amqp_bytes_t(len: 0, bytes: nil) }
        let pointer = allocate(count)
        let buffer = UnsafeMutableRawBufferPointer(start: pointer, count: count)
        buffer.copyBytes(from: source)
        return amqp_bytes_t(len: count, bytes: pointer)
    }

    /// An AMQP short string (exchange, routing key, queue, consumer tag, property strings, table keys).
    func shortString(_ text: String, field: @autoclosure () -> String) throws(AMQPError) -> amqp_bytes_t {
        let utf8 = text.utf8
        guard utf8.count <= 255 else {
            throw AMQPError(.invalidArgument, "\(field()) is \(utf8.count) bytes long; AMQP short strings hold at most 255")
        }
        return bytes(utf8)
    }

    /// An AMQP short string of exactly these bytes.
    func shortString(_ value: AMQPString, field: @autoclosure () -> String) throws(AMQPError) -> amqp_bytes_t {
        let count = value.count
        guard count <= 255 else {
            throw AMQPError(.invalidArgument, "\(field()) is \(count) bytes long; AMQP short strings hold at most 255")
        }
        return value.withBytes { bytes($0) }
    }

    /// `depth` counts the tables and arrays around this one; past `FieldTable.maximumDepth` the
    /// value is refused (received messages never hold deeper ones, see `FieldValue(amqpValue:)`),
    /// so encoding never recurses deeper either.
    func table(_ table: FieldTable?, depth: Int = 0) throws(AMQPError) -> amqp_table_t {
        guard let table, !table.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        guard depth <= FieldTable.maximumDepth else {
            throw AMQPError(.invalidArgument, "a field table is nested deeper than \(FieldTable.maximumDepth) levels")
        }
        let entries = allocate(MemoryLayout<amqp_table_entry_t>.stride * table.count)
            .bindMemory(to: amqp_table_entry_t.self, capacity: table.count)
        for (index, entry) in table.entries.enumerated() {
            let key = try shortString(entry.key, field: "table key \"\(entry.key.description.prefix(32))...\"")
            entries.advanced(by: index).initialize(to: amqp_table_entry_t(key: key, value: try value(entry.value, depth: depth &+ 1)))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    func value(_ fieldValue: FieldValue, depth: Int = 0) throws(AMQPError) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch fieldValue {
        case .boolean(let v):
            field.kind = FieldKind.boolean
            field.value.boolean = v ? 1 : 0
        case .int8(let v):
            field.kind = FieldKind.i8
            field.value.i8 = v
        case .uint8(let v):
            field.kind = FieldKind.u8
            field.value.u8 = v
        case .int16(let v):
            field.kind = FieldKind.i16
            field.value.i16 = v
        case .uint16(let v):
            field.kind = FieldKind.u16
            field.value.u16 = v
        case .int32(let v):
            field.kind = FieldKind.i32
            field.value.i32 = v
        case .uint32(let v):
            field.kind = FieldKind.u32
            field.value.u32 = v
        case .int64(let v):
            field.kind = FieldKind.i64
            field.value.i64 = v
        case .uint64(let v):
            field.kind = FieldKind.u64
            field.value.u64 = v
        case .float(let v):
            field.kind = FieldKind.f32
            field.value.f32 = v
        case .double(let v):
            field.kind = FieldKind.f64
            field.value.f64 = v
        case .decimal(let scale, let v):
            field.kind = FieldKind.decimal
            field.value.decimal = amqp_decimal_t(decimals: scale, value: v)
        case .string(let s):
            field.kind = FieldKind.utf8
            field.value.bytes = bytes(s.utf8)
        case .nonUTF8String(let b):
            field.kind = FieldKind.utf8
            field.value.bytes = bytes(b)
        case .bytes(let b):
            field.kind = FieldKind.bytes
            field.value.bytes = bytes(b)
        case .timestamp(let v):
            field.kind = FieldKind.timestamp
            field.value.u64 = v
        case .table(let t):
            field.kind = FieldKind.table
            field.value.table = try table(t, depth: depth)
        case .array(let values):
            field.kind = FieldKind.array
            let entries = allocate(MemoryLayout<amqp_field_value_t>.stride * values.count)
                .bindMemory(to: amqp_field_value_t.self, capacity: max(values.count, 1))
            guard depth <= FieldTable.maximumDepth else {
                throw AMQPError(.invalidArgument, "a field array is nested deeper than \(FieldTable.maximumDepth) levels")
            }
            for (index, element) in values.enumerated() {
                entries.advanced(by: index).initialize(to: try value(element, depth: depth &+ 1))
            }
            field.value.array = amqp_array_t(num_entries: Int32(values.count), entries: values.isEmpty ? nil : entries)
        case .void:
            field.kind = FieldKind.void
        }
        return field
    }

    func properties(_ p: BasicProperties) throws(AMQPError) -> amqp_basic_properties_t {
        var out = amqp_basic_properties_t()
        var flags: UInt32 = 0
        func flag(_ f: Int32) { flags |= UInt32(bitPattern: f) }
        if let v = p.contentType {
            out.content_type = try shortString(v, field: "content_type")
            flag(AMQP_BASIC_CONTENT_TYPE_FLAG)
        }
        if let v = p.contentEncoding {
            out.content_encoding = try shortString(v, field: "content_encoding")
            flag(AMQP_BASIC_CONTENT_ENCODING_FLAG)
        }
        if let v = p.headers {
            out.headers = try table(v)
            flag(AMQP_BASIC_HEADERS_FLAG)
        }
        if let v = p.deliveryMode {
            out.delivery_mode = v
            flag(AMQP_BASIC_DELIVERY_MODE_FLAG)
        }
        if let v = p.priority {
            out.priority = v
            flag(AMQP_BASIC_PRIORITY_FLAG)
        }
        if let v = p.correlationID {
            out.correlation_id = try shortString(v, field: "correlation_id")
            flag(AMQP_BASIC_CORRELATION_ID_FLAG)
        }
        if let v = p.replyTo {
            out.reply_to = try shortString(v, field: "reply_to")
            flag(AMQP_BASIC_REPLY_TO_FLAG)
        }
        if let v = p.expiration {
            out.expiration = try shortString(v, field: "expiration")
            flag(AMQP_BASIC_EXPIRATION_FLAG)
        }
        if let v = p.messageID {
            out.message_id = try shortString(v, field: "message_id")
            flag(AMQP_BASIC_MESSAGE_ID_FLAG)
        }
        if let v = p.timestamp {
            out.timestamp = v
            flag(AMQP_BASIC_TIMESTAMP_FLAG)
        }
        if let v = p.type {
            out.type = try shortString(v, field: "type")
            flag(AMQP_BASIC_TYPE_FLAG)
        }
        if let v = p.userID {
            out.user_id = try shortString(v, field: "user_id")
            flag(AMQP_BASIC_USER_ID_FLAG)
        }
        if let v = p.appID {
            out.app_id = try shortString(v, field: "app_id")
            flag(AMQP_BASIC_APP_ID_FLAG)
        }
        if let v = p.clusterID {
            out.cluster_id = try shortString(v, field: "cluster_id")
            flag(AMQP_BASIC_CLUSTER_ID_FLAG)
        }
        out._flags = flags
        return out
    }
}

extension CArena {
    /// The bytes librabbitmq writes for `properties` after the property flags, or nil when they do
    /// not fit in `capacity`. What `BasicProperties.wireSize` must agree with (tested).
    func librabbitmqPropertiesSize(_ properties: BasicProperties, capacity: Int = 1 << 20) throws(AMQPError) -> Int? {
        var decoded = try self.properties(properties)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        defer { buffer.deallocate() }
        let written = amqp_encode_properties(UInt16(AMQP_BASIC_CLASS), &decoded, amqp_bytes_t(len: capacity, bytes: buffer))
        // The result counts the flag words too: one here (fewer than 15 properties).
        return written < 0 ? nil : Int(written) - 2
    }
}
