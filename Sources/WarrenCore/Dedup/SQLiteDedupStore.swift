import AMQP
import Foundation
import NIOCore
import SQLiteNIO
import Synchronization

/// The `sqlite` dedup store: survives restarts. One table keyed by `(queue, handler,
/// message_id)` with an expiry time; WAL journal with `synchronous = NORMAL`, so a record costs
/// no fsync of its own (a power cut may forget the newest records, which only means a handler
/// may run again: at-least-once still holds). SQLiteNIO runs every call on NIO's blocking thread
/// pool, never on the cooperative pool.
public final class SQLiteDedupStore: DedupStore {
    public let path: String
    private let connection: SQLiteConnection
    private let ttlMilliseconds: Int64
    private let clock: DedupClock
    /// Expired rows are deleted once per `purgeInterval` of records, from the write path.
    private let lastPurge: Mutex<Int64>
    static let purgeInterval: Int64 = 60_000

    public struct OpenError: Error, CustomStringConvertible {
        public var path: String
        public var reason: String
        public var description: String { "dedup store \(path) cannot be opened: \(reason)" }
    }

    private init(path: String, connection: SQLiteConnection, ttl: Duration, clock: @escaping DedupClock) {
        self.path = path
        self.connection = connection
        self.ttlMilliseconds = ttl.milliseconds
        self.clock = clock
        self.lastPurge = Mutex(clock())
    }

    public static func open(path: String, ttl: Duration, clock: @escaping DedupClock = DedupStores.systemClock) async throws -> SQLiteDedupStore {
        let directory = (path as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) || !isDirectory.boolValue {
            throw OpenError(path: path, reason: "the directory \(directory) does not exist")
        }
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(storage: .file(path: path))
        } catch {
            throw OpenError(path: path, reason: "\(error)")
        }
        do {
            _ = try await connection.query("PRAGMA journal_mode = WAL")
            _ = try await connection.query("PRAGMA synchronous = NORMAL")
            _ = try await connection.query("PRAGMA busy_timeout = 5000")
            _ = try await connection.query("""
                CREATE TABLE IF NOT EXISTS warren_dedup (
                    queue TEXT NOT NULL, handler TEXT NOT NULL, message_id TEXT NOT NULL, expires_at INTEGER NOT NULL,
                    PRIMARY KEY (queue, message_id, handler)) WITHOUT ROWID
                """)
            _ = try await connection.query("CREATE INDEX IF NOT EXISTS warren_dedup_expiry ON warren_dedup (expires_at)")
        } catch {
            try? await connection.close()
            throw OpenError(path: path, reason: "\(error)")
        }
        return SQLiteDedupStore(path: path, connection: connection, ttl: ttl, clock: clock)
    }

    public func completed(queue: String, messageID: AMQPString, handlers: [String]) async throws -> Set<String> {
        guard !handlers.isEmpty else { return [] }
        let rows = try await connection.query(
            "SELECT handler FROM warren_dedup WHERE queue = ?1 AND message_id = ?2 AND expires_at > ?3",
            [.text(queue), Self.key(messageID), .integer(Int(clock()))])
        let done = Set(rows.compactMap { $0.column("handler")?.string })
        return done.intersection(handlers)
    }

    public func record(queue: String, messageID: AMQPString, handlers: [String]) async throws {
        guard !handlers.isEmpty else { return }
        let now = clock()
        var binds: [SQLiteData] = [.text(queue), Self.key(messageID), .integer(Int(now + ttlMilliseconds))]
        var rows: [String] = []
        for handler in handlers {
            binds.append(.text(handler))
            rows.append("(?1, ?\(binds.count), ?2, ?3)")
        }
        _ = try await connection.query(
            "INSERT OR REPLACE INTO warren_dedup (queue, handler, message_id, expires_at) VALUES \(rows.joined(separator: ", "))", binds)
        let due = lastPurge.withLock { last in
            guard now - last >= Self.purgeInterval else { return false }
            last = now
            return true
        }
        if due { try await purge(now: now) }
    }

    /// The `message_id` column's value: TEXT for valid UTF-8 (as every row written before
    /// binary ids were kept), a BLOB of the exact bytes otherwise. SQLite never equates a TEXT
    /// and a BLOB and compares each byte for byte, so two ids are one key only when their
    /// bytes are the same.
    static func key(_ messageID: AMQPString) -> SQLiteData {
        if let text = messageID.text { return .text(text) }
        return .blob(ByteBuffer(bytes: messageID.bytes))
    }

    /// Deletes expired rows.
    func purge(now: Int64) async throws {
        _ = try await connection.query("DELETE FROM warren_dedup WHERE expires_at <= ?1", [.integer(Int(now))])
    }

    /// Rows stored, expired ones included (for tests).
    func rowCount() async throws -> Int {
        try await connection.query("SELECT count(*) AS n FROM warren_dedup").first?.column("n")?.integer ?? 0
    }

    public func close() async {
        try? await connection.close()
    }
}
