import DesklineProtocol
import NIOCore

/// The bounded queue of lines waiting to be written to one client. Anyone may enqueue without
/// waiting (replies, pushes, timers, shutdown); one writer task drains it to the socket. A client
/// that stops reading lets the queue fill up and is disconnected ("send queue exceeded"), so no
/// sender ever waits on a slow client.
final class Outbox: Sendable {
    let stream: AsyncStream<ByteBuffer>
    private let continuation: AsyncStream<ByteBuffer>.Continuation
    private let channel: any Channel

    init(channel: any Channel, capacity: Int) {
        (stream, continuation) = AsyncStream.makeStream(of: ByteBuffer.self, bufferingPolicy: .bufferingOldest(capacity))
        self.channel = channel
    }

    /// Queues a line. Returns false if the queue was full (the connection is then closed) or
    /// already finished.
    @discardableResult
    func send(_ line: ServerLine) -> Bool {
        var text = line.serialized()
        text += "\r\n"
        switch continuation.yield(ByteBuffer(string: text)) {
        case .enqueued:
            return true
        case .dropped:
            // The client is not reading. Close now: nothing more can reach it anyway.
            continuation.finish()
            channel.close(promise: nil)
            return false
        case .terminated:
            return false
        @unknown default:
            return false
        }
    }

    /// No more lines: the writer sends what is queued, then the connection closes.
    func finish() {
        continuation.finish()
    }

    /// Closes the connection without waiting for queued lines (shutdown grace period over).
    func abort() {
        continuation.finish()
        channel.close(promise: nil)
    }
}
