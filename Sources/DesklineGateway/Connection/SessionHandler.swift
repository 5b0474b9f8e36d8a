import DesklineCore
import DesklineProtocol
import Logging
import NIOCore
import Synchronization

/// One client connection, on its event loop: frames lines, runs their commands in arrival order
/// (one at a time, except that back-to-back `MSG`/`NOTE` overlap once each one's write is queued,
/// see ``Command/pipelines``), writes the replies in that order, and keeps time (registration
/// timeout and keepalive, from ``ConnectionStateMachine``).
///
/// An idle connection costs no task: only this handler and a timer. A command runs in a Swift
/// task whose preferred executor is this event loop, so its reply is written without a hop.
/// The session ends with QUIT, end of input, a timeout, shutdown or a dead peer; it is removed
/// from the registry and the hub once the channel is closed and no command is running.
final class SessionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Lines framed but not yet run. The session frames a line only when fewer wait, and asks
    /// for more input only when the input it has holds no complete line: so it holds at most
    /// this many lines, plus one line not yet complete, plus one read (``maximumReadBytes``)
    /// past it; the rest waits in the client's socket (TCP then slows the client down).
    static let maximumPendingLines = 16
    /// The most bytes one socket read takes (the server reads once per readiness: the
    /// connection's `maxMessagesPerRead` is 1). Over TLS, one read hands on the plaintext of the
    /// records it completes (up to about 20 KiB).
    static let maximumReadBytes = 4096
    /// Pipelining commands of one session whose writes may wait for their commit at once. (A
    /// bot bursting `MSG` on this machine: 16 gave 13,000-17,000 stored messages/s, 64 gave
    /// 24,000-34,000; `deskline-bench burst`.) The tenant writer's group commit stops waiting
    /// once this many writes wait (`TenantWriter.enoughToStart`): keep the two equal.
    static let maximumInFlight = 64

    private let session: Session
    /// What the connection speaks: it prepares each line and renders every line sent.
    private let dialect: any ConnectionDialect
    private let outbox: Outbox
    private let machine: SharedMachine
    private let executor: EventLoopTaskExecutor
    /// This session's logger (``Session/sessionLogger``): made when something is logged.
    private var logger: Logger { session.sessionLogger }
    private let clock = ContinuousClock()
    private var flood: TokenBucket
    private var scope: SessionScope?
    private var framer: LineFramer
    /// Input read and not yet framed (none once every byte is framed).
    private var input: ByteBuffer?
    private var pending: [LineFrame] = []
    /// What this session holds of its client's input (see ``maximumPendingLines``).
    private var inputMeter: InputMeter { _read { yield machine.input } }
    /// The first pending line, prepared: kept while it waits for commands in flight to let it
    /// join them.
    private var preparedHead: PreparedLine?
    /// Commands started and not yet answered, oldest first; their replies go out in this order.
    private var inFlight: [InFlight] = []
    private var context: ChannelHandlerContext?
    /// Where this session is in its event loop's ``SessionTicker`` (nil: not ticked).
    var tickerSlot: Int?

    private var registered = false
    private var waitingForFlood = false
    /// The next command's flood-control token is taken (it waited for it).
    private var tokenTaken = false
    private var inputEnded = false
    /// No further command runs: QUIT, shutdown, a timeout or the end of the connection.
    private var ending = false
    private var readHeld = false
    /// A reply waits for the client to read (see ``writeReplies()``); no command starts meanwhile.
    private var waitingForRoom = false
    private var closed = false
    private var cleanedUp = false
    /// Why the session ends, once known: every disconnect is logged with it (see ``cleanUp()``).
    private var endReason: EndReason?

    init(session: Session, dialect: any ConnectionDialect, channel: any Channel, executor: EventLoopTaskExecutor) {
        self.session = session
        self.dialect = dialect
        let limits = session.limits
        self.outbox = Outbox(channel: channel, capacity: limits.sendQueueLines, lingerTime: session.lingerTime,
                             flusher: executor.flusher)
        self.machine = SharedMachine(ConnectionStateMachine(timeouts: session.environment.timeouts, now: clock.now))
        self.flood = TokenBucket(burst: limits.floodBurst, ratePerSecond: Double(limits.floodCommandsPerSecond), now: clock.now)
        self.framer = LineFramer(maximumLineBytes: limits.maxLineBytes)
        self.executor = executor
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbox.context = context
        outbox.writabilityChanged(context.channel.isWritable)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        outbox.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        defer { context.fireChannelActive() }
        guard session.registry.add(session.id, .init(outbox: outbox, machine: machine, dialect: dialect)) else {
            ending = true
            endReason = .shutdown
            outbox.send(dialect.notice(.closing(code: "SHUTTING_DOWN", text: "The server is shutting down; try again later.")))
            outbox.finish()
            return
        }
        registered = true
        for line in dialect.greeting() { outbox.send(line) }
        logger.debug("connection opened")
        // Timeouts and keepalive tick on the event loop, with every session of the loop: one
        // repeated task per loop, not one per session (nor a task).
        executor.ticker.add(self, interval: machine.state.withLock { $0.tickInterval })
    }

    /// Called by the event loop's ``SessionTicker``.
    func tick() {
        switch machine.state.withLock({ $0.tick(now: clock.now) }) {
        case .none:
            break
        case .sendPing(let token):
            outbox.send(dialect.notice(.ping(token: token)))
        case .close(let code, let text):
            executor.ticker.remove(self)
            // (A session already ending — QUIT, end of input, shutdown — only lingers for its
            // last lines: no further notice, and it keeps its reason.)
            guard !ending else { return }
            endReason = .timeout(code)
            ending = true
            outbox.send(dialect.notice(.closing(code: code, text: text)))
            outbox.finish()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !ending else { return }
        // A sign of life even if its command waits (behind a long reply, say).
        machine.state.withLock { $0.inputReceived(now: clock.now) }
        var bytes = unwrapInboundIn(data)
        inputMeter.bytesRead.add(bytes.readableBytes, ordering: .relaxed)
        if input == nil {
            input = bytes
        } else {
            input!.discardReadBytes()
            input!.writeBuffer(&bytes)
        }
        frameLines()
        // (Input held is at its most right after a read: later framing only moves it along.)
        inputMeter.held(pending.reduce(input?.readableBytes ?? 0) { held, frame in
            if case .line(let line) = frame { held + line.readableBytes } else { held }
        })
        pump()
    }

    /// Frames lines from the input read so far while fewer than ``maximumPendingLines`` wait;
    /// at the end of input, what is left counts as a last line.
    private func frameLines() {
        guard var buffer = input else { return }
        input = nil // (so the buffer is not shared while it is consumed)
        while pending.count < Self.maximumPendingLines, let frame = framer.next(&buffer) {
            pending.append(frame)
        }
        if inputEnded, pending.count < Self.maximumPendingLines, let frame = framer.last(&buffer) {
            pending.append(frame)
        }
        if buffer.readableBytes > 0 { input = buffer }
    }

    func read(context: ChannelHandlerContext) {
        if pending.count >= Self.maximumPendingLines {
            readHeld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            inputEnded = true
            frameLines()
            pump()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        outbox.writabilityChanged(writable)
        if writable {
            if waitingForRoom {
                writeReplies()
                carryOn()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if endReason == nil { endReason = .failed("\(error)") }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        ending = true
        executor.ticker.remove(self)
        // Replies waiting for room are dropped now (nobody reads them); commands still running
        // end the session when they finish.
        writeReplies()
        carryOn()
        context.fireChannelInactive()
    }

    /// Starts the commands that may start now, in arrival order.
    private func pump() {
        while startNext() {}
        if pending.isEmpty, inputEnded, inFlight.isEmpty, !ending {
            ending = true
            endReason = endReason ?? .clientClosed
            outbox.finish()
        }
    }

    /// Starts the next command if it may start now: when nothing is in flight, or when it and
    /// everything in flight are pipelining commands whose writes are queued
    /// (``Command/pipelines``). Returns whether it started one.
    private func startNext() -> Bool {
        guard !waitingForFlood, !waitingForRoom, !ending, !pending.isEmpty else { return false }
        if !inFlight.isEmpty {
            guard inFlight.count < Self.maximumInFlight, inFlight.allSatisfy({ $0.pipelines && $0.queued }) else { return false }
            // (Only pipelining commands are in flight, so none of them can change the scope.)
            let next = preparedHead ?? dialect.prepare(pending[0], scope: scope)
            preparedHead = next
            guard next.pipelines else { return false }
        }
        // Flood control: past the burst, wait for the token before running on.
        let wait = tokenTaken ? .zero : flood.take(now: clock.now)
        tokenTaken = false
        if wait > .zero, let loop = context?.eventLoop {
            waitingForFlood = true
            tokenTaken = true
            let loopBound = NIOLoopBound(self, eventLoop: loop)
            loop.scheduleTask(in: TimeAmount(wait)) {
                loopBound.value.waitingForFlood = false
                loopBound.value.pump()
            }
            return false
        }
        let frame = pending.removeFirst()
        // (An idle session keeps no buffer for lines it no longer has.)
        if pending.isEmpty { pending = [] }
        frameLines()
        let prepared = preparedHead ?? dialect.prepare(frame, scope: scope)
        preparedHead = nil
        let proceed = machine.state.withLock { $0.commandStarted() }
        guard proceed else { // shutting down; the registry sent the notice
            ending = true
            return false
        }
        let command = InFlight(pipelines: prepared.pipelines)
        inFlight.append(command)
        // (Only now: were a read ever delivered at once, its lines must queue behind this one.)
        if readHeld, pending.count < Self.maximumPendingLines {
            readHeld = false
            context?.read()
        }
        switch prepared {
        case .answered(let outcome):
            command.queued = true
            finished(command, outcome)
        case .work(_, let work):
            run(command, work)
        }
        return true
    }

    private func run(_ command: InFlight, _ work: @escaping @Sendable (CommandRun) async -> LineOutcome) {
        let (scope, outbox, log) = (self.scope, self.outbox, session.sessionLog)
        let loop = outbox.eventLoop
        let loopBound = NIOLoopBound(self, eventLoop: loop)
        let commandBound = NIOLoopBound(command, eventLoop: loop)
        // A pipelining command tells the session when its write is queued; the session then
        // considers its next line (always from a later turn of the loop, never from inside the
        // store's call).
        let onQueued: (@Sendable () -> Void)? = if command.pipelines {
            { @Sendable in loop.execute { loopBound.value.queued(commandBound.value) } }
        } else {
            nil
        }
        Task(executorPreference: executor) {
            let outcome = await work(CommandRun(scope: scope, outbox: outbox, log: log, whenQueued: onQueued))
            if loop.inEventLoop {
                loopBound.value.completed(commandBound.value, outcome)
            } else {
                loop.execute { loopBound.value.completed(commandBound.value, outcome) }
            }
        }
    }

    private func queued(_ command: InFlight) {
        guard !command.queued else { return }
        command.queued = true
        if !closed { pump() }
    }

    private func completed(_ command: InFlight, _ outcome: LineOutcome) {
        command.queued = true
        finished(command, outcome)
        carryOn()
    }

    /// After replies were written (or dropped): a closed connection's session ends once no
    /// command is in flight; an open one starts what may start now.
    private func carryOn() {
        if closed {
            if inFlight.isEmpty { cleanUp() }
        } else {
            pump()
        }
    }

    private func finished(_ command: InFlight, _ outcome: LineOutcome) {
        command.outcome = outcome
        machine.state.withLock { $0.commandFinished() }
        writeReplies()
    }

    /// Writes every reply now due: those of the finished commands at the head of the line, so
    /// replies keep the order of the commands.
    ///
    /// Replies are written only while the connection has room (NIO's 64 KiB over what the
    /// socket took). A long reply (a `QUEUE` of thousands of tickets) is written as the client
    /// reads it: the rest waits here until the channel is writable again, and no further command
    /// starts meanwhile, so a client that does not read stops itself and holds one reply at
    /// most. Replies therefore never count toward the send queue (`limits.sendQueueLines`); the
    /// events pushed to a client that does not read do. A command counts as unanswered until its
    /// reply is written, so a shutdown notice follows the whole reply. (Over TLS, NIOSSL takes
    /// the writes until the flush: the reply being written when the room runs out is taken whole.)
    private func writeReplies() {
        var wrote = false
        defer { if wrote { outbox.flush() } }
        while let head = inFlight.first, let outcome = head.outcome {
            // A finished outbox (a timeout struck meanwhile) takes no more lines, nor does a
            // connection the client closed.
            if !outbox.isFinished, !closed {
                while head.written < outcome.lines.count {
                    guard outbox.isWritable else {
                        waitingForRoom = true
                        return
                    }
                    _ = outbox.write(outcome.lines[head.written])
                    head.written += 1
                    wrote = true
                }
            }
            inFlight.removeFirst()
            if inFlight.isEmpty { inFlight = [] }
            outcome.written?()
            let shutdownNow = machine.state.withLock { $0.commandAnswered() }
            if let newScope = outcome.scope, scope == nil {
                // From now on the session acts as this login, from this connection. (LOGIN already
                // attached it to the hub, before counting unread notifications.)
                scope = newScope.onSession(session.services.hub.sessionID(session.id))
                preparedHead = nil
                machine.state.withLock { $0.loggedIn(now: clock.now) }
            }
            if outcome.quit {
                endReason = endReason ?? .quit
                ending = true
                outbox.finish()
            }
            if shutdownNow, !outbox.isFinished {
                endReason = endReason ?? .shutdown
                ending = true
                outbox.send(dialect.notice(.shuttingDown))
                outbox.finish()
            }
        }
        waitingForRoom = false
    }

    private func cleanUp() {
        guard !cleanedUp else { return }
        cleanedUp = true
        if registered { session.registry.remove(session.id) }
        session.services.hub.detach(session.id)
        // (Its connection-limit slot is free again.)
        session.environment.limiter?.release(session.remoteAddress)
        // Every disconnect is logged once, with why (a send queue overrun outranks what the
        // session was doing; the registry's shutdown notice and abort do not pass through here).
        let reason: EndReason = if outbox.wasCutOff {
            .sendQueueExceeded
        } else if let endReason {
            endReason
        } else if machine.state.withLock({ $0.shutdownRequested }) {
            .shutdown
        } else {
            .connectionLost
        }
        var metadata: Logger.Metadata = ["reason": "\(reason.code)"]
        if case .failed(let error) = reason { metadata["error"] = "\(error)" }
        if let scope {
            metadata["tenant"] = "\(scope.tenantId)"
            metadata["user"] = "\(scope.userId)"
        }
        logger.info("connection closed", metadata: metadata)
    }
}

/// Why a session ended, as the log line of its disconnect names it.
enum EndReason: Equatable {
    /// The client sent `QUIT`.
    case quit
    /// The client ended its input (closed or half-closed the connection).
    case clientClosed
    /// `REGISTRATION_TIMEOUT` or `PING_TIMEOUT`.
    case timeout(String)
    /// The client did not read its events (`limits.sendQueueLines`).
    case sendQueueExceeded
    /// The server is shutting down.
    case shutdown
    /// The connection failed (reset by the peer, TLS error, ...).
    case failed(String)
    /// The connection went away with none of the above (closed by the server's shutdown abort,
    /// say).
    case connectionLost

    var code: String {
        switch self {
        case .quit: "QUIT"
        case .clientClosed: "CLIENT_CLOSED"
        case .timeout(let code): code
        case .sendQueueExceeded: "SENDQ_EXCEEDED"
        case .shutdown: "SHUTDOWN"
        case .failed: "CONNECTION_ERROR"
        case .connectionLost: "CONNECTION_LOST"
        }
    }
}

/// A command of a session that started and has not been answered yet.
private final class InFlight {
    /// A pipelining command (or a line answered without running anything).
    let pipelines: Bool
    /// Its write is queued in the store, or it has finished: a later pipelining command may start.
    var queued = false
    var outcome: LineOutcome?
    /// Lines of its reply written so far (a long reply is written as the client reads it).
    var written = 0

    init(pipelines: Bool) { self.pipelines = pipelines }
}

/// Runs a task's jobs on one event loop, so a session's command continues on its connection's
/// thread instead of hopping to the global executor and back.
///
/// It also holds the loop's ``FlushCoalescer``: both are one per event loop.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop
    let flusher: FlushCoalescer
    let ticker: SessionTicker

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.flusher = FlushCoalescer(eventLoop: eventLoop)
        self.ticker = SessionTicker(eventLoop: eventLoop)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}

/// One per event loop of a server: ticks the timeouts and keepalives of every session of that
/// server on the loop with one repeated task. A repeated task per session cost about 700 bytes of each idle
/// session (the task, its closures and futures, its slot in the loop's timer heap) and most of
/// the CPU 10,000 idle sessions used. A session is ticked within one interval of its deadline
/// either way.
final class SessionTicker: @unchecked Sendable { // state is touched on `eventLoop` only
    let eventLoop: any EventLoop
    private var sessions: [SessionHandler] = []
    private var task: RepeatedTask?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    deinit { task?.cancel() }

    /// Ticks `session` from now on, every `interval` (the first session's: a server's sessions
    /// share their limits).
    func add(_ session: SessionHandler, interval: Duration) {
        eventLoop.assertInEventLoop()
        guard session.tickerSlot == nil else { return }
        session.tickerSlot = sessions.count
        sessions.append(session)
        if task == nil {
            task = eventLoop.scheduleRepeatedTask(initialDelay: TimeAmount(interval), delay: TimeAmount(interval)) { [weak self] _ in
                self?.tickAll()
            }
        }
    }

    /// Stops ticking `session` (it takes the last session's slot).
    func remove(_ session: SessionHandler) {
        eventLoop.assertInEventLoop()
        guard let slot = session.tickerSlot else { return }
        session.tickerSlot = nil
        let last = sessions.removeLast()
        if slot < sessions.count {
            sessions[slot] = last
            last.tickerSlot = slot
        }
        if sessions.isEmpty {
            task?.cancel()
            task = nil
            sessions = []
        }
    }

    private func tickAll() {
        // A tick may remove its session (a timeout): iterate over the sessions as they were.
        for session in sessions where session.tickerSlot != nil { session.tick() }
    }
}

/// Tells a connection over the limits why, and closes it.
final class RefusalHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let line: ByteBuffer
    private let isSecure: Bool

    init(_ line: ByteBuffer, isSecure: Bool) {
        self.line = line
        self.isSecure = isSecure
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let written = channel.writeAndFlush(line)
        if isSecure {
            // TLS holds the line until the handshake is done, and closing now would drop it.
            // Closing only our side waits for the line; the client then leaves, or is cut off
            // after a moment.
            written.whenComplete { _ in channel.close(mode: .output, promise: nil) }
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        } else {
            written.whenComplete { _ in channel.close(promise: nil) }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// What a session holds of its client's input, for tests and diagnostics: read off the socket
/// and not yet run (framed lines waiting plus bytes not framed yet). Kept in the session's
/// ``SharedMachine`` (not an object of its own).
struct InputMeter: ~Copyable, Sendable {
    /// Bytes read off the socket so far.
    let bytesRead = Atomic<Int>(0)
    /// The most input held at once.
    let mostHeld = Atomic<Int>(0)

    func held(_ bytes: Int) {
        mostHeld.max(bytes, ordering: .relaxed)
    }
}
