import DesklineCore
import DesklineProtocol
import Logging
import NIOCore
import Synchronization

/// One client connection: reads lines, runs commands in order, writes replies, keeps time.
///
/// Three tasks cooperate: the reader (parses and runs one command at a time, so pipelined
/// commands are answered in order), the writer (drains the ``Outbox`` to the socket) and the
/// timer (registration timeout and keepalive, from ``ConnectionStateMachine``). The connection
/// ends when the writer ends: after QUIT, end of input, a timeout, shutdown or a dead peer.
struct Session {
    let id: Int
    let table: CommandTable
    let services: GatewayServices
    let limits: GatewayConfiguration.Limits
    let registry: SessionRegistry
    let logger: Logger
    /// How long the last lines of an ended session may take to be read before the connection is
    /// closed anyway.
    let lingerTime: Duration
    /// The client's IP address.
    var remoteAddress = "unknown"
    /// Whether the connection is encrypted, and whether commands that carry a password must be.
    var security = TransportSecurity()

    private enum Part {
        case writer, reader, linger
    }

    /// Serves the connection until it is over. Never throws: a failing client is logged and closed.
    func run(_ connection: NIOAsyncChannel<LineFrame, ByteBuffer>) async {
        var connectionLogger = self.logger
        connectionLogger[metadataKey: "session"] = "\(id)"
        if let remote = connection.channel.remoteAddress { connectionLogger[metadataKey: "remote"] = "\(remote)" }
        let logger = connectionLogger
        do {
            try await connection.executeThenClose { inbound, outbound in
                let outbox = Outbox(channel: connection.channel, capacity: limits.sendQueueLines)
                let clock = ContinuousClock()
                let machine = SharedMachine(ConnectionStateMachine(timeouts: .init(
                    registration: .seconds(limits.registrationTimeoutSeconds),
                    pingInterval: .seconds(limits.pingIntervalSeconds),
                    pingTimeout: .seconds(limits.pingTimeoutSeconds)), now: clock.now))
                guard registry.add(id, .init(outbox: outbox, machine: machine)) else {
                    outbox.send(ServerLine(.event, "ERROR", ["SHUTTING_DOWN"], text: "The server is shutting down; try again later."))
                    outbox.finish()
                    await Self.drain(outbox, to: outbound)
                    return
                }
                defer {
                    registry.remove(id)
                    services.hub.detach(id)
                }
                let welcome = if let port = security.tlsPortForPasswords {
                    "Welcome to Deskline. This connection is not encrypted: log in over TLS on port \(port); HELP lists commands."
                } else {
                    "Welcome to Deskline. Log in with LOGIN <email> <password>; HELP lists commands."
                }
                outbox.send(ServerLine(.event, "HELLO", ["deskline", DesklineVersion.current], text: welcome))
                logger.debug("connection opened")

                await withTaskGroup(of: Part.self) { group in
                    group.addTask {
                        await Self.drain(outbox, to: outbound)
                        return .writer
                    }
                    group.addTask {
                        await read(inbound, outbox: outbox, machine: machine, clock: clock, logger: logger)
                        outbox.finish()
                        return .reader
                    }
                    // Timeouts and keepalive tick on the connection's event loop (a scheduled
                    // task costs far less memory than a sleeping Swift task per session).
                    let interval = machine.state.withLock { $0.tickInterval }
                    let lingerTime = self.lingerTime
                    let channel = connection.channel
                    let timer = channel.eventLoop.scheduleRepeatedTask(
                        initialDelay: TimeAmount(interval), delay: TimeAmount(interval)
                    ) { task in
                        switch machine.state.withLock({ $0.tick(now: clock.now) }) {
                        case .none:
                            break
                        case .sendPing(let token):
                            outbox.send(ServerLine(.event, "PING", text: token))
                        case .close(let code, let text):
                            task.cancel()
                            logger.info("closing connection", metadata: ["reason": "\(code)"])
                            outbox.send(ServerLine(.event, "ERROR", [code], text: text))
                            outbox.finish()
                            // A client that does not read its last lines is cut off after a while.
                            channel.eventLoop.scheduleTask(in: TimeAmount(lingerTime)) { outbox.abort() }
                        }
                    }
                    defer { timer.cancel() }
                    var lingering = false
                    while let part = await group.next() {
                        switch part {
                        case .writer:
                            // Everything was written (or the peer is gone): the connection is over.
                            group.cancelAll()
                        case .reader:
                            // The session is over but its last lines may still be queued. A client
                            // that does not read them gets `lingerTime`, then is cut off.
                            if !lingering {
                                lingering = true
                                let linger = lingerTime
                                group.addTask {
                                    if (try? await Task.sleep(for: linger)) != nil { outbox.abort() }
                                    return .linger
                                }
                            }
                        case .linger:
                            break
                        }
                    }
                }
                logger.debug("connection closed")
            }
        } catch {
            logger.debug("connection ended with error", metadata: ["error": "\(error)"])
        }
    }

    /// Tells a connection over the limits why, and closes it.
    static func refuse(_ connection: NIOAsyncChannel<LineFrame, ByteBuffer>, _ refusal: ConnectionLimiter.Refusal,
                       security: TransportSecurity) async {
        let text = switch refusal {
        case .serverFull: "The server has too many connections; try again later."
        case .tooManyFromAddress: "Too many connections from your address."
        case .tooFast: "Too many new connections from your address; wait a minute."
        }
        let line = ServerLine(.event, "ERROR", ["TOO_MANY_CONNECTIONS"], text: text).serialized() + "\r\n"
        try? await connection.executeThenClose { _, outbound in
            try await outbound.write(ByteBuffer(string: line))
            if security.isSecure {
                // TLS holds the line until the handshake is done, and closing now would drop it.
                // Closing only our side waits for the line; the client then leaves, or is cut
                // off after a moment.
                let channel = connection.channel
                channel.close(mode: .output, promise: nil)
                let deadline = channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
                try? await channel.closeFuture.get()
                deadline.cancel()
            }
        }
    }

    private static func drain(_ outbox: Outbox, to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async {
        while let lines = await outbox.next() {
            do {
                try await outbound.write(contentsOf: lines)
            } catch {
                return
            }
        }
    }

    private func read(_ inbound: NIOAsyncChannelInboundStream<LineFrame>, outbox: Outbox,
                      machine: SharedMachine, clock: ContinuousClock, logger: Logger) async {
        var scope: SessionScope?
        var flood = TokenBucket(burst: limits.floodBurst, ratePerSecond: Double(limits.floodCommandsPerSecond), now: clock.now)
        do {
            for try await frame in inbound {
                // Flood control: past the burst, wait for a token before reading on.
                let wait = flood.take(now: clock.now)
                if wait > .zero { try await Task.sleep(for: wait) }
                let proceed = machine.state.withLock { m in
                    m.inputReceived(now: clock.now)
                    return m.commandStarted()
                }
                guard proceed else { return } // shutting down; the notice was sent
                let outcome = await handle(frame, scope: scope, outbox: outbox, logger: logger)
                for line in outcome.lines where !outbox.send(line) {
                    logger.info("closing connection", metadata: ["reason": "SENDQ_EXCEEDED"])
                    return
                }
                if let newScope = outcome.scope, scope == nil {
                    // From now on the session acts as this login, from this connection. (LOGIN
                    // already attached it to the hub, before counting unread notifications.)
                    scope = newScope.onSession(id)
                    machine.state.withLock { $0.loggedIn(now: clock.now) }
                }
                if machine.state.withLock({ $0.commandFinished() }) {
                    outbox.send(SessionRegistry.shutdownNotice)
                    return
                }
                if outcome.quit { return }
            }
        } catch {
            logger.debug("read failed", metadata: ["error": "\(error)"])
        }
    }

    struct Outcome {
        var lines: [ServerLine]
        var scope: SessionScope?
        var quit = false
    }

    /// Turns one frame into its reply lines. Pure apart from the command handler it calls.
    func handle(_ frame: LineFrame, scope: SessionScope?, outbox: Outbox, logger: Logger) async -> Outcome {
        func refuse(_ code: String, _ text: String, command: String = "*", label: String? = nil) -> Outcome {
            Outcome(lines: [.error(label: label, command: command, code: code, text: text)], scope: scope)
        }
        guard case .line(let buffer) = frame else {
            return refuse("LINE_TOO_LONG", "Line longer than \(limits.maxLineBytes) bytes; it was discarded.")
        }
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self) else {
            return refuse("INVALID_UTF8", "The line is not valid UTF-8; it was discarded.")
        }
        if buffer.readableBytesView.contains(0) {
            return refuse("NUL_BYTE", "The line contains a NUL byte; it was discarded.", label: ClientMessage.label(inUnparsedLine: text))
        }
        let message: ClientMessage
        do {
            guard let parsed = try ClientMessage.parse(text) else { return Outcome(lines: [], scope: scope) }
            message = parsed
        } catch {
            return refuse(error.code, error.message, label: ClientMessage.label(inUnparsedLine: text))
        }
        let verb = message.verb
        if let label = message.label, label.isEmpty || label.utf8.count > 64 {
            return refuse("BAD_LABEL", "The label tag must be 1-64 bytes.", command: verb)
        }
        let label = message.label
        guard let command = table.command(verb, for: scope) else {
            let r = CommandRefusal.unknown(verb)
            return refuse(r.code, r.text, command: verb, label: label)
        }
        if !command.isAvailable(to: scope) {
            let r = switch scope {
            case nil: CommandRefusal.notLoggedIn
            case _? where command.access.roles.isEmpty: CommandRefusal.alreadyLoggedIn
            case let scope?: CommandRefusal.forbidden(verb, scope.role)
            }
            return refuse(r.code, r.text, command: verb, label: label)
        }
        // Before the arguments are even looked at: no password work, no throttle counting.
        if command.carriesPassword, let port = security.tlsPortForPasswords {
            let r = CommandRefusal.tlsRequired(verb, port: port)
            return refuse(r.code, r.text, command: verb, label: label)
        }
        let arguments: Arguments
        switch CommandTable.arguments(for: command, from: message) {
        case .success(let a): arguments = a
        case .failure(let e): return refuse(e.code, e.text, command: verb, label: label)
        }
        let (hub, session) = (services.hub, id)
        var context = CommandContext(message: message, arguments: arguments, services: services, logger: logger,
                                     sessionId: id, remoteAddress: remoteAddress, scope: scope,
                                     attach: { hub.attach(session, scope: $0.onSession(session), outbox: outbox) })
        var lines: [ServerLine]
        var newScope = scope
        do {
            lines = try await command.handler(&context)
            newScope = context.scope
        } catch {
            if error.code == DesklineError.storage("").code {
                logger.error("command failed in the store", metadata: ["command": "\(verb)", "error": "\(error.message)"])
            }
            lines = [.error(command: verb, code: error.code, text: error.message)]
        }
        // The reply's lines carry the label; events a handler adds after its reply never do.
        for i in lines.indices where lines[i].kind != .event { lines[i].label = label }
        return Outcome(lines: lines, scope: newScope, quit: context.quit)
    }
}

/// What a session knows of its transport; it does not care which listener accepted it.
struct TransportSecurity: Sendable {
    /// The connection is encrypted (TLS).
    var isSecure = false
    /// With `tls.requireTLSForLogin`: the TLS port, where commands that carry a password must go.
    var requiredTLSPort: Int?

    /// The port to send the client to when this connection may not carry passwords; nil if it may.
    var tlsPortForPasswords: Int? { isSecure ? nil : requiredTLSPort }
}

/// The version the server reports in `EVENT HELLO`.
public enum DesklineVersion {
    public static let current = "0.1.0"
}

/// The connection state machine, shared by the reader and the timer task.
final class SharedMachine: Sendable {
    let state: Mutex<ConnectionStateMachine>
    init(_ machine: ConnectionStateMachine) { state = Mutex(machine) }
}
