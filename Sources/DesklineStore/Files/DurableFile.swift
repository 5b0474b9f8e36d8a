#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

#if canImport(Glibc)
private let systemRead = Glibc.read
#elseif canImport(Darwin)
private let systemRead = Darwin.read
#endif

/// Blocking, durable file primitives. Call them only from a thread pool, never an event loop.
enum DurableFile {
    /// Prefix of temp files; anything starting with it is a leftover of an interrupted write.
    static let tempPrefix = ".tmp-"

    struct IOError: Error, CustomStringConvertible {
        var operation: String
        var path: String
        var errno: Int32
        var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
    }

    /// Replaces `path` atomically: temp file in the same directory → write → fsync → rename →
    /// fsync the directory. A reader sees the old or the new content, never a mix, and after a
    /// crash the new content is either fully there or not at all. (A failed directory sync leaves
    /// the new content in place, perhaps not durably: account changes undo it, see
    /// ``AccountTransaction``.) `faults`: for tests.
    static func replace(_ path: String, with data: Data, faults: FaultInjection? = nil) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let temp = dir + "/" + tempPrefix + name + "-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw IOError(operation: "create", path: temp, errno: errno) }
        do {
            try faults?.check(.write, path)
            try writeAll(fd, data, path: temp)
            try faults?.check(.sync, path)
            guard fsync(fd) == 0 else { throw IOError(operation: "fsync", path: temp, errno: errno) }
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        // close(2) releases the descriptor even when it reports an error; never close it twice.
        guard close(fd) == 0 else {
            let e = errno
            unlink(temp)
            throw IOError(operation: "close", path: temp, errno: e)
        }
        do {
            try faults?.check(.rename, path)
            guard rename(temp, path) == 0 else { throw IOError(operation: "rename", path: path, errno: errno) }
        } catch {
            unlink(temp)
            throw error
        }
        try syncDirectory(dir, faults: faults)
    }

    /// Cuts a torn last line (one without its newline) off a log and fsyncs it; returns how many
    /// bytes were cut (0 if the log was whole or does not exist).
    static func cutTornTail(_ path: String) throws -> Int64 {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return 0 }
            throw IOError(operation: "open", path: path, errno: errno)
        }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        let clean = try lengthWithoutTornLine(fd, path: path)
        guard size > clean else { return 0 }
        guard ftruncate(fd, clean) == 0, fsync(fd) == 0 else { throw IOError(operation: "truncate", path: path, errno: errno) }
        return Int64(size - clean)
    }

    /// The file's length up to and including its last newline.
    static func lengthWithoutTornLine(_ fd: Int32, path: String) throws -> off_t {
        var end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw IOError(operation: "seek", path: path, errno: errno) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while end > 0 {
            let start = max(0, end - off_t(buffer.count))
            let count = Int(end - start)
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, start) }
            guard n == count else { throw IOError(operation: "read", path: path, errno: errno) }
            if let newline = buffer[0..<count].lastIndex(of: UInt8(ascii: "\n")) {
                return start + off_t(newline) + 1
            }
            end = start
        }
        return 0
    }

    /// The file's content, or nil if it does not exist.
    static func read(_ path: String) throws -> Data? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw IOError(operation: "open", path: path, errno: errno)
        }
        defer { close(fd) }
        var result = Data()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { systemRead(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            result.append(contentsOf: buffer[0..<n])
        }
        return result
    }

    /// The last complete line (without its newline) of a log, reading backwards from the end:
    /// its cost does not depend on the file's length. Nil if the file does not exist or holds no
    /// complete line. See ``forEachLineBackward(_:visibleLength:_:)`` for `visibleLength`.
    static func lastLine(_ path: String, visibleLength: (_ measure: () throws -> Int64) throws -> Int64 = { try $0() }) throws -> Data? {
        var last: Data?
        try forEachLineBackward(path, visibleLength: visibleLength) { line in
            last = line
            return false
        }
        return last
    }

    /// Calls `body` with the complete lines of a log (without newlines), newest first, until it
    /// returns false; reads the file backwards in chunks, so only what is visited is read. A last
    /// line without its newline (an unfinished write) is skipped.
    ///
    /// `visibleLength` gets the measure of the open file's size and returns how much of it may be
    /// read: less for a log a write batch is appending to (see `LogVisibility`). Bytes beyond it
    /// are not read.
    static func forEachLineBackward(_ path: String, visibleLength: (_ measure: () throws -> Int64) throws -> Int64 = { try $0() },
                                    _ body: (Data) throws -> Bool) throws {
        try LogReader(path, visibleLength: visibleLength)?.forEachLineBackward(body)
    }

    /// Creates `path` and any missing parents, fsyncing each parent so the new entries survive a crash.
    static func makeDirectories(_ path: String, faults: FaultInjection? = nil) throws {
        if isDirectory(path) { return }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try makeDirectories(parent, faults: faults) }
        try faults?.check(.makeDirectory, path)
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw IOError(operation: "mkdir", path: path, errno: errno)
        }
        try syncDirectory(parent.isEmpty ? "." : parent, faults: faults)
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    /// Removes `path`; true if it was there, false if it was not.
    @discardableResult
    static func remove(_ path: String, faults: FaultInjection? = nil) throws -> Bool {
        try faults?.check(.remove, path)
        if unlink(path) == 0 { return true }
        if errno == ENOENT { return false }
        throw IOError(operation: "unlink", path: path, errno: errno)
    }

    static func syncDirectory(_ dir: String, faults: FaultInjection? = nil) throws {
        try faults?.check(.syncDirectory, dir)
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw IOError(operation: "open directory", path: dir, errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw IOError(operation: "fsync directory", path: dir, errno: errno) }
    }

    /// Names in a directory (empty if it does not exist), without `.` and `..`.
    static func list(_ dir: String) throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: dir)
        } catch let error as CocoaError where error.code == .fileReadNoSuchFile {
            return []
        }
    }

    /// Writes all of `data`, at `position` if given (pwrite), else at the current offset.
    static func writeAll(_ fd: Int32, _ data: Data, path: String, at position: off_t? = nil) throws {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < raw.count {
                let n = position.map { pwrite(fd, raw.baseAddress! + offset, raw.count - offset, $0 + off_t(offset)) }
                    ?? write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw IOError(operation: "write", path: path, errno: errno)
                }
                offset += n
            }
        }
    }
}

/// An advisory `flock(2)` lock on a file. Works between processes (server and admin CLI) and
/// between threads of one process, since each holder opens its own file description.
/// Release it exactly once (``release()``); ``with(_:_:)`` does that for scoped use.
final class FileLock: Sendable {
    private let fd: Int32
    let path: String

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Blocks until the exclusive lock is held.
    static func acquire(_ path: String) throws -> FileLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DurableFile.IOError(operation: "open lock", path: path, errno: errno) }
        while flock(fd, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let e = errno
            close(fd)
            throw DurableFile.IOError(operation: "lock", path: path, errno: e)
        }
        return FileLock(fd: fd, path: path)
    }

    /// Takes the exclusive lock if nobody holds it; nil if another holder has it.
    static func tryAcquire(_ path: String) throws -> FileLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DurableFile.IOError(operation: "open lock", path: path, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            close(fd)
            if e == EWOULDBLOCK { return nil }
            throw DurableFile.IOError(operation: "lock", path: path, errno: e)
        }
        return FileLock(fd: fd, path: path)
    }

    /// Replaces the lock file's content (e.g. with the holder's pid, for error messages), synced:
    /// the server lock's content says whether the next start must recover.
    func write(_ text: String) {
        _ = ftruncate(fd, 0)
        let bytes = Array(text.utf8)
        _ = pwrite(fd, bytes, bytes.count, 0)
        _ = fsync(fd)
    }

    static func holderDescription(_ path: String) -> String? {
        guard let data = try? DurableFile.read(path), let s = String(data: data, encoding: .utf8) else { return nil }
        let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
        return t.isEmpty ? nil : t
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }

    /// Runs `body` holding the lock at `path`.
    static func with<T>(_ path: String, _ body: () throws -> T) throws -> T {
        let lock = try acquire(path)
        defer { lock.release() }
        return try body()
    }
}
