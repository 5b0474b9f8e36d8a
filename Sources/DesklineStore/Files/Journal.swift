#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A tenant's write-ahead journal (`<tenant>/journal`): what makes a group commit durable with
/// one `fdatasync`, however many logs it touched.
///
/// A batch appends its lines to the logs without syncing them, then appends one record to the
/// journal holding every one of those appends (log, offset, bytes) and syncs the journal alone.
/// Once the journal is past ``checkpointBytes``, a checkpoint syncs every log written since the
/// last one (and the directories that got new logs) and only then empties the journal. After an
/// unclean stop, ``replay(tenantDir:)`` writes every complete record back into its log, so
/// nothing acknowledged is lost even if the logs' unsynced pages were.
///
/// Record: `DLJ1 <entries> <body bytes> <checksum>\n` then, per entry, `<log path relative to the
/// tenant>\n<offset> <length>\n<bytes>`. The checksum (FNV-1a, 64 bit, hex) covers the body; a
/// record that is incomplete or does not match was never acknowledged, and ends the replay.
///
/// Used by one thread at a time: its ``TenantWriter`` keeps it behind a mutex (hence the
/// unchecked `Sendable`: the mutex is what makes it safe).
final class Journal: @unchecked Sendable {
    let path: String
    let tenantDir: String
    private var fd: Int32 = -1
    private(set) var size: off_t = 0
    /// A failed commit's record could not be cut off: the next commit cuts it before writing.
    private var cutPending = false
    /// Logs written since the last checkpoint (not synced yet) and directories that got a new log.
    private var dirtyLogs: Set<String> = []
    private var dirtyDirectories: Set<String> = []
    /// A checkpoint runs once the journal is this long.
    static let checkpointBytes: off_t = 4 << 20

    init(tenantDir: String) {
        self.tenantDir = tenantDir
        self.path = tenantDir + "/journal"
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    struct Entry {
        /// Absolute path of the log.
        var path: String
        var offset: off_t
        var bytes: Data
        var created: Bool
    }

    /// Appends one record holding `entries` and syncs the journal: from then on the entries are
    /// durable. On failure the journal is cut back to where it was (or, should that fail too, by
    /// the next commit before it writes) and the error is thrown.
    func commit(_ entries: [Entry], faults: FaultInjection?) throws {
        guard !entries.isEmpty else { return }
        if fd < 0 {
            let opened = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard opened >= 0 else { throw DurableFile.IOError(operation: "open", path: path, errno: errno) }
            fd = opened
            size = lseek(fd, 0, SEEK_END)
            // A new journal's directory entry must survive a crash like the records in it.
            try DurableFile.syncDirectory(tenantDir)
        }
        if cutPending {
            guard cut(to: size, faults: faults) else { throw DurableFile.IOError(operation: "truncate", path: path, errno: errno) }
            cutPending = false
        }
        let record = Self.encode(entries.map { ($0.path.dropFirst(tenantDir.count + 1), $0.offset, $0.bytes) })
        let start = size
        do {
            try faults?.check(.write, path)
            try DurableFile.writeAll(fd, record, path: path, at: start)
            for entry in entries { try faults?.check(.sync, entry.path) }
            try faults?.check(.sync, path)
            guard fdatasync(fd) == 0 else { throw DurableFile.IOError(operation: "fsync", path: path, errno: errno) }
        } catch {
            // A record that stayed could be replayed after a crash: the next commit cuts it first.
            cutPending = !cut(to: start, faults: faults)
            throw error
        }
        size = start + off_t(record.count)
        for entry in entries {
            dirtyLogs.insert(entry.path)
            if entry.created { dirtyDirectories.insert((entry.path as NSString).deletingLastPathComponent) }
        }
    }

    /// Cuts the journal back to `length` (a failed commit's record) and syncs the cut.
    private func cut(to length: off_t, faults: FaultInjection?) -> Bool {
        do { try faults?.check(.cut, path) } catch { return false }
        return ftruncate(fd, length) == 0 && fdatasync(fd) == 0
    }

    var needsCheckpoint: Bool { size >= Self.checkpointBytes }

    /// Whether a tenant's journal holds anything (one `stat`): after a clean stop it is empty.
    static func hasRecords(tenantDir: String) -> Bool {
        var info = stat()
        return stat(tenantDir + "/journal", &info) == 0 && info.st_size > 0
    }

    /// Syncs every log written since the last checkpoint and the directories that got new logs,
    /// then empties the journal. If anything fails, the journal is kept (and still covers them).
    func checkpoint() throws {
        try SyncThreads.forEach(Array(dirtyLogs)) { path in
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                if errno == ENOENT { return }
                throw DurableFile.IOError(operation: "open", path: path, errno: errno)
            }
            defer { close(fd) }
            guard fdatasync(fd) == 0 else { throw DurableFile.IOError(operation: "fsync", path: path, errno: errno) }
        }
        try SyncThreads.forEach(Array(dirtyDirectories)) { try DurableFile.syncDirectory($0) }
        if fd >= 0 {
            guard ftruncate(fd, 0) == 0 else { throw DurableFile.IOError(operation: "truncate", path: path, errno: errno) }
            guard fsync(fd) == 0 else { throw DurableFile.IOError(operation: "fsync", path: path, errno: errno) }
        }
        size = 0
        dirtyLogs = []
        dirtyDirectories = []
    }

    // MARK: Format

    /// The record of `entries` (the format above). The checksum is worked out piece by piece, so
    /// the bytes are copied once, into the record.
    static func encode(_ entries: [(path: Substring, offset: off_t, bytes: Data)]) -> Data {
        var heads = entries.map { "\($0.path)\n\($0.offset) \($0.bytes.count)\n" }
        var length = 0
        var sum = checksumBasis
        for i in heads.indices {
            heads[i].withUTF8 { head in
                length += head.count
                sum = checksum(UnsafeRawBufferPointer(head), continuing: sum)
            }
            length += entries[i].bytes.count
            sum = entries[i].bytes.withUnsafeBytes { checksum($0, continuing: sum) }
        }
        var header = "DLJ1 \(entries.count) \(length) \(String(sum, radix: 16))\n"
        var record = Data(capacity: header.utf8.count + length)
        header.withUTF8 { record.append($0.baseAddress!, count: $0.count) }
        for i in heads.indices {
            heads[i].withUTF8 { record.append($0.baseAddress!, count: $0.count) }
            record.append(entries[i].bytes)
        }
        return record
    }

    static let checksumBasis: UInt64 = 0xcbf2_9ce4_8422_2325

    static func checksum(_ data: Data) -> UInt64 {
        data.withUnsafeBytes { checksum($0, continuing: checksumBasis) }
    }

    /// FNV-1a, 64 bits, going on from `hash`.
    static func checksum(_ raw: UnsafeRawBufferPointer, continuing hash: UInt64) -> UInt64 {
        var hash = hash
        for byte in raw {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// The complete records of a journal's content, in order; stops at the first incomplete or
    /// damaged one (an unfinished write, never acknowledged). Paths are relative to the tenant.
    static func decode(_ data: Data) -> (records: [[(path: String, offset: off_t, bytes: Data)]], validBytes: Int) {
        var records: [[(path: String, offset: off_t, bytes: Data)]] = []
        var position = data.startIndex
        func line(from start: Data.Index, in range: Range<Data.Index>) -> (String, Data.Index)? {
            guard let newline = data[start..<range.upperBound].firstIndex(of: 0x0A) else { return nil }
            return (String(decoding: data[start..<newline], as: UTF8.self), newline + 1)
        }
        while position < data.endIndex {
            guard let (header, bodyStart) = line(from: position, in: position..<data.endIndex) else { break }
            let fields = header.split(separator: " ")
            guard fields.count == 4, fields[0] == "DLJ1", let count = Int(fields[1]), let length = Int(fields[2]),
                  let sum = UInt64(fields[3], radix: 16), count >= 0, length >= 0,
                  data.endIndex - bodyStart >= length else { break }
            let bodyRange = bodyStart..<(bodyStart + length)
            guard checksum(data[bodyRange]) == sum else { break }
            var entries: [(path: String, offset: off_t, bytes: Data)] = []
            var cursor = bodyStart
            var valid = true
            for _ in 0..<count {
                guard let (path, afterPath) = line(from: cursor, in: bodyRange),
                      let (numbers, afterNumbers) = line(from: afterPath, in: bodyRange) else { valid = false; break }
                let parts = numbers.split(separator: " ")
                guard parts.count == 2, let offset = off_t(parts[0]), let size = Int(parts[1]), offset >= 0, size >= 0,
                      bodyRange.upperBound - afterNumbers >= size, isSafe(path) else { valid = false; break }
                entries.append((path, offset, data[afterNumbers..<(afterNumbers + size)]))
                cursor = afterNumbers + size
            }
            guard valid, cursor == bodyRange.upperBound else { break }
            records.append(entries)
            position = bodyRange.upperBound
        }
        return (records, position - data.startIndex)
    }

    /// A journal entry may only name a log inside the tenant's directory.
    private static func isSafe(_ path: String) -> Bool {
        !path.isEmpty && !path.hasPrefix("/") && !path.split(separator: "/").contains("..") && !path.contains("\0")
    }

    /// Writes every complete record of a tenant's journal back into its logs, cuts each of
    /// those logs after its last journaled line (anything beyond was never acknowledged), syncs
    /// them, and empties the journal. Returns how many records were replayed (0: nothing to do).
    @discardableResult
    static func replay(tenantDir: String) throws -> Int {
        let path = tenantDir + "/journal"
        guard let data = try DurableFile.read(path), !data.isEmpty else { return 0 }
        let (records, _) = decode(data)
        var ends: [String: off_t] = [:]
        var directories: Set<String> = []
        for record in records {
            for entry in record {
                let log = tenantDir + "/" + entry.path
                let dir = (log as NSString).deletingLastPathComponent
                if !directories.contains(dir) {
                    try DurableFile.makeDirectories(dir)
                    directories.insert(dir)
                }
                let fd = open(log, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw DurableFile.IOError(operation: "open", path: log, errno: errno) }
                defer { close(fd) }
                try DurableFile.writeAll(fd, entry.bytes, path: log, at: entry.offset)
                ends[log] = entry.offset + off_t(entry.bytes.count)
            }
        }
        try SyncThreads.forEach(Array(ends)) { log, end in
            let fd = open(log, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { throw DurableFile.IOError(operation: "open", path: log, errno: errno) }
            defer { close(fd) }
            if lseek(fd, 0, SEEK_END) > end, ftruncate(fd, end) != 0 {
                throw DurableFile.IOError(operation: "truncate", path: log, errno: errno)
            }
            guard fdatasync(fd) == 0 else { throw DurableFile.IOError(operation: "fsync", path: log, errno: errno) }
        }
        try SyncThreads.forEach(Array(directories)) { try DurableFile.syncDirectory($0) }
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw DurableFile.IOError(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        guard ftruncate(fd, 0) == 0, fsync(fd) == 0 else { throw DurableFile.IOError(operation: "truncate", path: path, errno: errno) }
        return records.count
    }
}
