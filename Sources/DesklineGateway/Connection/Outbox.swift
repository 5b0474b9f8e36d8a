import DesklineProtocol
import NIOCore

/// The way out to one client. Anyone may send without waiting (replies, pushes, timers,
/// shutdown): the line is written to the channel on its event loop, so a push costs one hop to
/// that loop and no task. A client that stops reading makes the channel unwritable (its socket
/// and NIO's buffer are full); past `capacity` further lines it is disconnected ("send queue
/// exceeded"), so no sender ever waits on a slow client. (Its session writes replies only while
/// the channel is writable, so they never count: see `SessionHandler.writeReplies()`.)
final class Outbox: @unchecked Sendable { // `state` is touched on the event loop only
    private struct State {
        /// Lines written while the channel was not writable.
        var unwritableLines = 0
        /// No more lines are taken; the channel closes once what was written has gone out.
        var finished = false
        /// A flush is due at the end of the event loop's current round (see ``FlushCoalescer``).
        var flushPending = false
        /// The client was disconnected for not reading (send queue exceeded).
        var cutOff = false
        /// The channel takes more without queueing past NIO's limit, as its session last heard
        /// (``writabilityChanged(_:)``). Kept here: asking the channel cost a dynamic call and an
        /// atomic load for every line pushed.
        var writable = true
    }

    let channel: any Channel
    /// The channel's event loop (kept: asking the channel for it costs a dynamic call).
    let eventLoop: any EventLoop
    private let capacity: Int
    /// How long a finished outbox waits for a client that does not read its last lines.
    private let lingerTime: Duration
    /// Touched on the event loop only. (A plain field: a loop-bound box was one more
    /// allocation per session.)
    private var _state = State()
    private var state: State {
        _read {
            eventLoop.preconditionInEventLoop()
            yield _state
        }
        _modify {
            eventLoop.preconditionInEventLoop()
            yield &_state
        }
    }
    /// Collects the flushes of the channels on this event loop; nil: flush at once.
    private let flusher: FlushCoalescer?
    /// The session's place in the channel's pipeline while it is there (set on the event loop):
    /// lines are written from there, past the tail of the pipeline and the session's own
    /// handler, which only pass them on. Nil: through the channel. (So a handler added after the
    /// session's would not see the pushed lines: the session's handler must stay the last.)
    var context: ChannelHandlerContext? {
        get { eventLoop.preconditionInEventLoop(); return _context }
        set { eventLoop.preconditionInEventLoop(); _context = newValue }
    }
    private var _context: ChannelHandlerContext?

    init(channel: any Channel, capacity: Int, lingerTime: Duration = .seconds(5), flusher: FlushCoalescer? = nil) {
        self.channel = channel
        self.eventLoop = channel.eventLoop
        self.capacity = capacity
        self.lingerTime = lingerTime
        self.flusher = flusher
    }

    static func encode(_ line: ServerLine) -> ByteBuffer {
        var text = line.serialized()
        text += "\r\n"
        return ByteBuffer(string: text)
    }

    /// Queues a line from anywhere; it is written and flushed on the channel's event loop.
    func send(_ line: ServerLine) {
        send(Self.encode(line))
    }

    /// Queues a line in wire form (ending included) from anywhere.
    func send(_ buffer: ByteBuffer) {
        onLoop { Self.write(buffer, to: [$0]) }
    }

    /// On their event loop: writes one line in wire form to each of `outboxes` and flushes it
    /// (at the end of the loop's round). (A line for many clients is encoded once, and handed to
    /// each event loop once: see `SessionHub.publish(_:)`.)
    static func write(_ buffer: ByteBuffer, to outboxes: [Outbox]) {
        for outbox in outboxes where outbox.write(buffer) { outbox.flush() }
    }

    /// On the event loop: writes a line without flushing. False if the outbox is finished, or
    /// the client stopped reading and has now been disconnected.
    func write(_ line: ServerLine) -> Bool {
        write(Self.encode(line))
    }

    func write(_ buffer: ByteBuffer) -> Bool {
        guard !state.finished else { return false }
        if !state.writable {
            state.unwritableLines += 1
            if state.unwritableLines > capacity {
                // The client is not reading. Close now: nothing more can reach it anyway.
                state.finished = true
                state.cutOff = true
                channel.close(promise: nil)
                return false
            }
        }
        if let context = _context {
            context.write(NIOAny(buffer), promise: nil)
        } else {
            channel.write(buffer, promise: nil)
        }
        return true
    }

    /// On the event loop: sends what was written, once the loop has run what is queued on it
    /// now; lines for this client written meanwhile go out in the same `write` system call.
    func flush() {
        guard let flusher else { return flushNow() }
        guard !state.flushPending else { return }
        state.flushPending = true
        flusher.add(self)
    }

    /// Called by the ``FlushCoalescer``.
    fileprivate func flushNow() {
        state.flushPending = false
        if let context = _context { context.flush() } else { channel.flush() }
    }

    /// On the event loop: the channel became writable (the client reads again, its send queue
    /// is empty) or not writable.
    func writabilityChanged(_ writable: Bool) {
        state.writable = writable
        if writable { state.unwritableLines = 0 }
    }

    /// On the event loop: whether the channel takes more without queueing past NIO's limit.
    var isWritable: Bool { state.writable }

    var isFinished: Bool { state.finished }

    /// On the event loop: whether the client was disconnected for not reading its lines.
    var wasCutOff: Bool { state.cutOff }

    /// No more lines: what was written goes out, then the connection closes. A client that does
    /// not read it is cut off after the linger time.
    func finish() {
        onLoop { outbox in
            guard !outbox.state.finished else { return }
            outbox.state.finished = true
            let channel = outbox.channel
            let promise = channel.eventLoop.makePromise(of: Void.self)
            // Writes complete in order: once this empty one is done, every line before it is out.
            channel.writeAndFlush(ByteBuffer(), promise: promise)
            promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            channel.eventLoop.scheduleTask(in: TimeAmount(outbox.lingerTime)) { channel.close(promise: nil) }
        }
    }

    /// Closes the connection without waiting for written lines (shutdown grace period over).
    func abort() {
        onLoop { outbox in
            outbox.state.finished = true
            outbox.channel.close(promise: nil)
        }
    }

    private func onLoop(_ body: @escaping @Sendable (Outbox) -> Void) {
        if eventLoop.inEventLoop {
            body(self)
        } else {
            eventLoop.execute { body(self) }
        }
    }
}

/// `items` grouped by their event loop, in first-seen order. There are few loops (one per core),
/// so a linear search.
func grouped<Item>(_ items: [Item], by loop: (Item) -> any EventLoop) -> [[Item]] {
    var groups: [[Item]] = []
    for item in items {
        if let i = groups.firstIndex(where: { loop($0[0]) === loop(item) }) {
            groups[i].append(item)
        } else {
            groups.append([item])
        }
    }
    return groups
}

/// One per event loop: flushes every channel written to during a round of the loop's work in
/// one task queued behind that work. Under light load that is at once; under heavy load many
/// lines for one client leave in one `write`, as a classic IRC daemon's send queue does, instead
/// of one system call (and one TCP segment) per line.
final class FlushCoalescer: @unchecked Sendable { // state is touched on `eventLoop` only
    let eventLoop: any EventLoop
    private var pending: [Outbox] = []
    private var scheduled = false

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    fileprivate func add(_ outbox: Outbox) {
        eventLoop.assertInEventLoop()
        pending.append(outbox)
        guard !scheduled else { return }
        scheduled = true
        eventLoop.execute { self.flushAll() }
    }

    private func flushAll() {
        let outboxes = pending
        pending = []
        scheduled = false
        for outbox in outboxes { outbox.flushNow() }
    }
}
