#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A log opened for reading its complete lines at any place: backwards from a line's end,
/// forwards from a line's start, or the first line at or past a key that grows along the log
/// (a binary search over byte offsets). Only what is visited is read, and never a byte beyond the
/// visible length taken when it was opened (see `LogVisibility`). Blocking: thread pools only.
final class LogReader {
    let path: String
    private let fd: Int32
    /// How much of the file may be read.
    let visibleLength: Int64
    /// Bytes read so far (for tests and statistics: what a read costs).
    private(set) var bytesRead = 0

    private var knownEnd: Int64?

    /// Opens `path`; nil if it does not exist. `visibleLength` gets the measure of the open
    /// file's size and returns how much of it may be read (see
    /// ``DurableFile/forEachLineBackward(_:visibleLength:_:)``).
    init?(_ path: String, visibleLength: (_ measure: () throws -> Int64) throws -> Int64 = { try $0() }) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw DurableFile.IOError(operation: "open", path: path, errno: errno)
        }
        do {
            self.visibleLength = try visibleLength {
                let size = lseek(fd, 0, SEEK_END)
                guard size >= 0 else { throw DurableFile.IOError(operation: "seek", path: path, errno: errno) }
                return Int64(size)
            }
        } catch {
            close(fd)
            throw error
        }
        self.path = path
        self.fd = fd
    }

    deinit { close(fd) }

    /// The end of the last complete visible line: a torn last line (an unfinished write) is not
    /// a line.
    func end() throws -> Int64 {
        if let knownEnd { return knownEnd }
        var upTo = visibleLength, end: Int64 = 0
        while upTo > 0 {
            let from = max(0, upTo - 4096)
            let bytes = try read(from, Int(upTo - from))
            if let newline = bytes.lastIndex(of: 0x0A) {
                end = from + Int64(newline) + 1
                break
            }
            upTo = from
        }
        knownEnd = end
        return end
    }

    private func read(_ offset: Int64, _ count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n == count else { throw DurableFile.IOError(operation: "read", path: path, errno: n < 0 ? errno : EIO) }
        bytesRead += count
        return buffer
    }

    /// Calls `body` with the complete lines ending at or before `upTo` (a line's end, or the
    /// visible length: a torn last line is then skipped), without their newlines, newest first,
    /// until it returns false. Empty lines are skipped.
    func forEachLineBackward(before upTo: Int64? = nil, _ body: (Data) throws -> Bool) throws {
        // `pending` holds bytes [start, upTo) not yet handed out; lines end at a newline.
        var pending = [UInt8]()
        var start = upTo ?? visibleLength
        var chunk = 16 * 1024
        var sawNewline = false
        while start > 0 {
            let from = max(0, start - Int64(chunk))
            pending = try read(from, Int(start - from)) + pending
            start = from
            chunk = min(chunk * 2, Self.largestChunk)
            if !sawNewline {
                // Drop a torn tail: everything after the last newline.
                guard let last = pending.lastIndex(of: 0x0A) else { continue }
                pending.removeSubrange((last + 1)...)
                sawNewline = true
            }
            // Hand out every line that is now whole (its start is known); keep the first,
            // possibly partial, one.
            while let newline = pending[..<(pending.count - 1)].lastIndex(of: 0x0A) {
                let line = Data(pending[(newline + 1)..<(pending.count - 1)])
                pending.removeSubrange((newline + 1)...)
                if !line.isEmpty, try !body(line) { return }
            }
        }
        if sawNewline, pending.count > 1, try !body(Data(pending[..<(pending.count - 1)])) { return }
    }

    /// Calls `body` with the pieces of the log between newlines from `offset` on (the first one
    /// is the rest of a line unless `offset` starts one), each with where it starts and where the
    /// next one does, oldest first, until it returns false or the complete lines end.
    func forEachLine(from offset: Int64, firstChunk: Int = 16 * 1024, _ body: (_ line: Data, _ start: Int64, _ next: Int64) throws -> Bool) throws {
        let end = try self.end()
        // `buffer` holds bytes from `bufferStart`; those before `lineStart` are handed out.
        var buffer = [UInt8]()
        var bufferStart = offset, lineStart = 0
        var readTo = offset
        var chunk = max(1, firstChunk)
        while true {
            if let newline = buffer[lineStart...].firstIndex(of: 0x0A) {
                let start = bufferStart + Int64(lineStart)
                let line = Data(buffer[lineStart..<newline])
                lineStart = newline + 1
                if try !body(line, start, bufferStart + Int64(lineStart)) { return }
                continue
            }
            guard readTo < end else { return }
            buffer.removeSubrange(..<lineStart)
            bufferStart += Int64(lineStart)
            lineStart = 0
            let count = Int(min(Int64(chunk), end - readTo))
            buffer += try read(readTo, count)
            readTo += Int64(count)
            chunk = min(chunk * 2, Self.largestChunk)
        }
    }

    /// The start of the first non-empty complete line for which `isPast` holds (``end()`` if
    /// none), reading O(log n) lines: `isPast` must be false for the log's first lines and true
    /// for all the rest, as for "this line's key is at least k" with keys that never decrease
    /// along the log.
    func firstLine(where isPast: (Data) throws -> Bool) throws -> Int64 {
        // Every non-empty line starting before `low` is not past; every one from `high` on is
        // (`low` and `high` are line starts or the end); no line starts in [`probed`, `high`).
        var low: Int64 = 0, high = try end()
        var probed = high
        while probed - low > Self.scanLength {
            let middle = low + (probed - low) / 2
            // The first non-empty line starting in [middle, high), after the rest of the line
            // that holds byte middle - 1.
            var probe: (start: Int64, next: Int64, past: Bool)?
            var first = true
            try forEachLine(from: middle - 1, firstChunk: 1024) { line, start, next in
                if first {
                    first = false
                    return true
                }
                guard start < high else { return false }
                guard !line.isEmpty else { return true }
                probe = (start, next, try isPast(line))
                return false
            }
            if let probe {
                if probe.past {
                    (high, probed) = (probe.start, probe.start)
                } else {
                    low = probe.next
                }
            } else {
                probed = middle
            }
        }
        // A few lines left (and perhaps a long one up to `high`): in order.
        guard high > low else { return high }
        var found = high
        try forEachLine(from: low, firstChunk: Int(min(high - low, Self.scanLength))) { line, start, _ in
            guard start < high else { return false }
            if !line.isEmpty, try isPast(line) {
                found = start
                return false
            }
            return true
        }
        return found
    }

    /// Below this many bytes a search reads the lines in order instead of probing (a few lines).
    static let scanLength: Int64 = 4096
    /// The most a read asks for at once: reading far (a long page of a customer's view past
    /// many notes, a whole log) reads in chunks that double up to this.
    static let largestChunk = 256 * 1024
}
