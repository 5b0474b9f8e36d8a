import DesklineCore
import DesklineProtocol
import Logging
import NIOCore
import Synchronization

/// What every session of a server runs with: one object per server, so that a connection
/// holds one reference to it instead of a copy (a few hundred bytes, kept twice: by its handler
/// and its dialect).
final class SessionEnvironment: Sendable {
    let table: CommandTable
    let services: GatewayServices
    let limits: GatewayConfiguration.Limits
    let registry: SessionRegistry
    let logger: Logger
    /// How long the last lines of an ended session may take to be read before the connection is
    /// closed anyway.
    let lingerTime: Duration
    /// Counts the connections per address; an ended session gives its slot back (nil: none).
    let limiter: ConnectionLimiter?
    /// Every session's registration timeout and keepalive.
    let timeouts: ConnectionStateMachine.Timeouts

    init(table: CommandTable, services: GatewayServices, limits: GatewayConfiguration.Limits, registry: SessionRegistry,
         logger: Logger, lingerTime: Duration, limiter: ConnectionLimiter? = nil) {
        self.limiter = limiter
        self.timeouts = .init(registration: .seconds(limits.registrationTimeoutSeconds),
                              pingInterval: .seconds(limits.pingIntervalSeconds),
                              pingTimeout: .seconds(limits.pingTimeoutSeconds))
        self.table = table
        self.services = services
        self.limits = limits
        self.registry = registry
        self.logger = logger
        self.lingerTime = lingerTime
    }
}

/// What one connection runs its commands with, and the dispatch of one line to its command.
/// ``SessionHandler`` owns the connection itself: reading, ordering, flood control, timeouts.
struct Session {
    let id: Int
    let environment: SessionEnvironment
    /// The client's IP address.
    var remoteAddress = "unknown"
    /// Whether the connection is encrypted, and whether commands that carry a password must be.
    var security = TransportSecurity()

    var table: CommandTable { environment.table }
    var services: GatewayServices { environment.services }
    var limits: GatewayConfiguration.Limits { environment.limits }
    var registry: SessionRegistry { environment.registry }
    var logger: Logger { environment.logger }
    var lingerTime: Duration { environment.lingerTime }

    init(id: Int, environment: SessionEnvironment) {
        self.id = id
        self.environment = environment
    }

    /// The server's logger with this session's id and address. Made when something is logged,
    /// not kept: an idle session holds none.
    var sessionLogger: Logger { sessionLog.logger }

    /// What makes ``sessionLogger``, for a command to make it only if it logs.
    var sessionLog: SessionLog { SessionLog(base: environment.logger, session: id, remote: remoteAddress) }

    /// The first line a client gets.
    var welcome: ServerLine {
        let text = if let port = security.tlsPortForPasswords {
            "Welcome to Deskline. This connection is not encrypted: log in over TLS on port \(port); HELP lists commands."
        } else {
            "Welcome to Deskline. Log in with LOGIN <email> <password>; HELP lists commands."
        }
        return ServerLine(.event, "HELLO", ["deskline", DesklineVersion.current], text: text)
    }

    /// What a connection over the limits is told before it is closed.
    static func refusal(_ refusal: ConnectionLimiter.Refusal) -> ServerLine {
        let text = switch refusal {
        case .serverFull: "The server has too many connections; try again later."
        case .tooManyFromAddress: "Too many connections from your address."
        case .tooFast: "Too many new connections from your address; wait a minute."
        }
        return ServerLine(.event, "ERROR", ["TOO_MANY_CONNECTIONS"], text: text)
    }

    struct Outcome {
        var lines: [ServerLine]
        var scope: SessionScope?
        var quit = false
    }

    /// A line made ready to run: either its reply is already known (it is malformed, unknown
    /// or not allowed), or it is a command with its checked arguments. (Boxed: an idle session
    /// keeps an empty one, and its payload is a few hundred bytes.)
    indirect enum Prepared {
        case answered(Outcome)
        case command(Command, ClientMessage, Arguments)

        /// Whether it may run while the session's earlier pipelining commands wait for their
        /// writes (see ``Command/pipelines``). An answered line changes nothing.
        var pipelines: Bool {
            switch self {
            case .answered: true
            case .command(let command, _, _): command.pipelines
            }
        }
    }

    /// Turns one frame into its reply lines. Pure apart from the command handler it calls.
    func handle(_ frame: LineFrame, scope: SessionScope?, outbox: Outbox) async -> Outcome {
        switch prepare(frame, scope: scope) {
        case .answered(let outcome): outcome
        case .command(let command, let message, let arguments):
            await run(command, message, arguments, scope: scope, outbox: outbox)
        }
    }

    /// Everything about a line that needs no I/O: decoding, parsing, the command, access,
    /// the TLS rule and the arguments.
    func prepare(_ frame: LineFrame, scope: SessionScope?) -> Prepared {
        func refuse(_ code: String, _ text: String, command: String = "*", label: String? = nil) -> Prepared {
            .answered(Outcome(lines: [.error(label: label, command: command, code: code, text: text)], scope: scope))
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
            guard let parsed = try ClientMessage.parse(text) else { return .answered(Outcome(lines: [], scope: scope)) }
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
        switch CommandTable.arguments(for: command, from: message) {
        case .success(let arguments): return .command(command, message, arguments)
        case .failure(let e): return refuse(e.code, e.text, command: verb, label: label)
        }
    }

    /// Runs a prepared command; every error becomes its `ERR` line.
    /// `whenQueued` goes to a pipelining command (see ``CommandContext/whenQueued``).
    func run(_ command: Command, _ message: ClientMessage, _ arguments: Arguments, scope: SessionScope?,
             outbox: Outbox, whenQueued: (@Sendable () -> Void)? = nil) async -> Outcome {
        let (verb, label) = (message.verb, message.label)
        let (hub, session) = (services.hub, id)
        var context = CommandContext(message: message, arguments: arguments, services: services, log: sessionLog,
                                     sessionId: id, remoteAddress: remoteAddress, scope: scope,
                                     attach: { hub.attach(session, scope: $0.onSession(hub.sessionID(session)), outbox: outbox) })
        context.whenQueued = whenQueued
        var lines: [ServerLine]
        var newScope = scope
        do {
            lines = try await command.handler(&context)
            newScope = context.scope
        } catch {
            if error.code == DesklineError.storage("").code {
                sessionLogger.error("command failed in the store", metadata: ["command": "\(verb)", "error": "\(error.message)"])
            }
            lines = [.error(command: verb, code: error.code, text: NativeDialect.text(of: error, role: context.scope?.role))]
        }
        // The reply's lines carry the label; events a handler adds after its reply never do.
        for i in lines.indices where lines[i].kind != .event { lines[i].label = label }
        return Outcome(lines: lines, scope: newScope, quit: context.quit)
    }
}

/// A session's logger, made only when something is logged: adding the session's metadata to
/// the server's logger costs a few allocations, 2% of a busy server's CPU when it was made for
/// every command.
struct SessionLog: Sendable {
    let base: Logger
    let session: Int
    let remote: String

    var logger: Logger {
        var logger = base
        logger[metadataKey: "session"] = "\(session)"
        logger[metadataKey: "remote"] = "\(remote)"
        return logger
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

/// The connection state machine, shared by the session and the registry (shutdown), and what
/// the session holds of its client's input.
final class SharedMachine: Sendable {
    let state: Mutex<ConnectionStateMachine>
    let input = InputMeter()
    init(_ machine: ConnectionStateMachine) { state = Mutex(machine) }
}
