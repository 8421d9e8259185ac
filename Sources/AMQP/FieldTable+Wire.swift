internal import CRabbitMQ
import Glibc

// A field table in its AMQP 0-9-1 wire encoding (a 4-byte big-endian length, then the entries),
// through librabbitmq's own encoder and decoder: the exact form any AMQP client library reads
// back (pika's `decode_table`, amqplib's codec). Warren hands it to handlers that must see
// headers a JSON object cannot carry (keys or long strings that are not UTF-8).

extension FieldTable {
    /// The table as AMQP writes it in a content header.
    public func wireEncoding() throws(AMQPError) -> [UInt8] {
        let arena = CArena()
        var table = try arena.table(self)
        var capacity = 4096
        // Grows until the table fits; a content header never comes near the limit.
        while capacity <= 1 << 30 {
            var buffer = [UInt8](repeating: 0, count: capacity)
            var offset = 0
            let status = buffer.withUnsafeMutableBytes { raw in
                amqp_encode_table(amqp_bytes_t(len: raw.count, bytes: raw.baseAddress), &table, &offset)
            }
            if status == AMQP_STATUS_OK.rawValue {
                buffer.removeSubrange(offset...)
                return buffer
            }
            guard status == AMQP_STATUS_TABLE_TOO_BIG.rawValue else {
                throw AMQPError(.invalidArgument, "the field table cannot be encoded (librabbitmq status \(status))")
            }
            capacity = capacity &* 4
        }
        throw AMQPError(.invalidArgument, "the field table is larger than AMQP allows")
    }

    /// Decodes a table written by `wireEncoding()` (or by any AMQP client).
    public init(wireEncoding encoded: [UInt8]) throws(AMQPError) {
        var pool = amqp_pool_t()
        init_amqp_pool(&pool, 4096)
        defer { empty_amqp_pool(&pool) }
        var output = amqp_table_t()
        var offset = 0
        var copy = encoded
        let status = copy.withUnsafeMutableBytes { raw in
            amqp_decode_table(amqp_bytes_t(len: raw.count, bytes: raw.baseAddress), &pool, &output, &offset)
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            throw AMQPError(.protocolError, "the bytes are not an AMQP field table (librabbitmq status \(status))")
        }
        // Copied out of the pool before it is emptied.
        self.init(amqpTable: output)
    }
}
