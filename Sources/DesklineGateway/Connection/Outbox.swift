import DesklineProtocol
import NIOCore
import Synchronization

/// The bounded queue of lines waiting to be written to one client. Anyone may enqueue without
/// waiting (replies, pushes, timers, shutdown); one writer task drains it to the socket, taking
/// everything queued at once so that a burst of lines costs one write and one flush. A client
/// that stops reading lets the queue fill up and is disconnected ("send queue exceeded"), so no
/// sender ever waits on a slow client.
final class Outbox: Sendable {
    private struct State {
        var lines: [ByteBuffer] = []
        /// The writer, waiting for lines.
        var waiter: CheckedContinuation<[ByteBuffer]?, Never>?
        /// No more lines are taken; the writer gets what is queued, then nil.
        var finished = false
    }

    private let state = Mutex(State())
    private let capacity: Int
    private let channel: any Channel

    init(channel: any Channel, capacity: Int) {
        self.channel = channel
        self.capacity = capacity
    }

    /// Queues a line. Returns false if the queue was full (the connection is then closed) or
    /// already finished.
    @discardableResult
    func send(_ line: ServerLine) -> Bool {
        var text = line.serialized()
        text += "\r\n"
        let buffer = ByteBuffer(string: text)
        enum Outcome { case queued, full, finished }
        let (outcome, wake, batch) = state.withLock { s -> (Outcome, CheckedContinuation<[ByteBuffer]?, Never>?, [ByteBuffer]?) in
            if s.finished { return (.finished, nil, nil) }
            if s.lines.count >= capacity {
                // The client is not reading. Close now: nothing more can reach it anyway.
                s.finished = true
                s.lines = []
                let waiter = s.waiter
                s.waiter = nil
                return (.full, waiter, nil)
            }
            if let waiter = s.waiter {
                s.waiter = nil
                return (.queued, waiter, [buffer])
            }
            s.lines.append(buffer)
            return (.queued, nil, nil)
        }
        wake?.resume(returning: batch)
        switch outcome {
        case .queued:
            return true
        case .full:
            channel.close(promise: nil)
            return false
        case .finished:
            return false
        }
    }

    /// Everything queued (waiting until there is something), or nil once finished and drained.
    /// Cancelling the waiting task finishes the outbox.
    func next() async -> [ByteBuffer]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[ByteBuffer]?, Never>) in
                let ready = state.withLock { s -> [ByteBuffer]?? in
                    if !s.lines.isEmpty {
                        defer { s.lines = [] }
                        return .some(s.lines)
                    }
                    if s.finished { return .some(nil) }
                    s.waiter = continuation
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            finish()
        }
    }

    /// No more lines: the writer sends what is queued, then the connection closes.
    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<[ByteBuffer]?, Never>? in
            s.finished = true
            guard s.lines.isEmpty else { return nil }
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Closes the connection without waiting for queued lines (shutdown grace period over).
    func abort() {
        let waiter = state.withLock { s -> CheckedContinuation<[ByteBuffer]?, Never>? in
            s.finished = true
            s.lines = []
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: nil)
        channel.close(promise: nil)
    }
}
