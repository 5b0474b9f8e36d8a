import DesklineCore
import DesklineProtocol
import Logging

/// The shape of one command parameter; usage text and argument checks both come from it.
enum ParameterShape: Sendable {
    /// One word.
    case word(String)
    /// One word that may be left out (only at the end).
    case optionalWord(String)
    /// Free text: the rest of the line, with or without a leading `:`.
    case text(String)
    /// Free text that may be left out.
    case optionalText(String)

    var name: String {
        switch self {
        case .word(let n), .optionalWord(let n), .text(let n), .optionalText(let n): n
        }
    }

    var isRequired: Bool {
        switch self {
        case .word, .text: true
        case .optionalWord, .optionalText: false
        }
    }

    var isText: Bool {
        switch self {
        case .text, .optionalText: true
        case .word, .optionalWord: false
        }
    }
}

/// Who may run a command, and when.
struct CommandAccess: Sendable {
    /// Usable before LOGIN.
    var beforeLogin: Bool
    /// Roles that may use it once logged in (empty: not usable after LOGIN).
    var roles: Set<Role>

    static let anyone = CommandAccess(beforeLogin: true, roles: Set(Role.allCases))
    static let loggedIn = CommandAccess(beforeLogin: false, roles: Set(Role.allCases))
    static let guestOnly = CommandAccess(beforeLogin: true, roles: [])
    static let customers = CommandAccess(beforeLogin: false, roles: [.customer])
    static let staff = CommandAccess(beforeLogin: false, roles: [.agent, .admin])
    static let admins = CommandAccess(beforeLogin: false, roles: [.admin])
}

/// One protocol command: the single source for dispatch, access checks, HELP and the command
/// list in docs/PROTOCOL.md (a test checks the document against this table).
struct Command: Sendable {
    typealias Handler = @Sendable (inout CommandContext) async throws(DesklineError) -> [ServerLine]

    var name: String
    var access: CommandAccess
    var parameters: [ParameterShape]
    var summary: String
    /// For commands whose parameters the shapes cannot describe (HISTORY, CALL).
    var customUsage: String?
    /// The command or its reply carries a password, so with `tls.requireTLSForLogin` it is
    /// refused on an unencrypted connection before anything else is done with it.
    var carriesPassword: Bool
    /// The command makes exactly one write, a ticket change, and reads nothing another
    /// pipelining command changes. Once that write is queued in the store (it will be stored
    /// after the session's earlier writes), the session may start its next pipelining command
    /// while this one waits for its fsync; replies still go out in order. So a client that sends
    /// many messages at once gets them committed together.
    var pipelines: Bool
    var handler: Handler

    init(name: String, access: CommandAccess, parameters: [ParameterShape], summary: String,
         usage: String? = nil, carriesPassword: Bool = false, pipelines: Bool = false, handler: @escaping Handler) {
        self.name = name
        self.access = access
        self.parameters = parameters
        self.summary = summary
        self.customUsage = usage
        self.carriesPassword = carriesPassword
        self.pipelines = pipelines
        self.handler = handler
    }

    var usage: String {
        customUsage ?? ([name] + parameters.map { $0.isRequired ? "<\($0.name)>" : "[<\($0.name)>]" }).joined(separator: " ")
    }

    /// Whether `scope` (nil: not logged in) may see and use this command.
    func isAvailable(to scope: SessionScope?) -> Bool {
        guard let scope else { return access.beforeLogin }
        return access.roles.contains(scope.role)
    }
}

/// Parsed arguments of one command, by parameter name.
struct Arguments: Sendable {
    private var values: [String: String] = [:]

    subscript(_ name: String) -> String? {
        get { values[name] }
        set { values[name] = newValue }
    }

    /// A required parameter; the table guarantees it is present when the handler runs.
    func required(_ name: String) -> String { values[name] ?? "" }
}

/// What a handler gets: the message, its arguments and the session it may act on.
struct CommandContext {
    let message: ClientMessage
    let arguments: Arguments
    let services: GatewayServices
    /// Makes ``logger``: the session's logger, built when a handler logs.
    let log: SessionLog
    var logger: Logger { log.logger }
    /// This connection, for the session's channels (JOIN/PART).
    let sessionId: Int
    /// The client's IP address (for LOGIN's failure limits).
    let remoteAddress: String
    /// The logged-in identity, or nil. Only LOGIN sets it.
    var scope: SessionScope?
    /// Registers this connection with the hub as `scope`, so events reach it (LOGIN).
    let attach: @Sendable (SessionScope) -> Void
    /// Set by QUIT: the session ends after this reply.
    var quit = false
    /// For a pipelining command (``Command/pipelines``): to be called once its write is queued
    /// in the store, so the session may start its next pipelining command.
    var whenQueued: (@Sendable () -> Void)?

    /// The session's identity; the table only runs login-only commands on logged-in sessions.
    func requireScope() throws(DesklineError) -> SessionScope {
        guard let scope else { throw .forbidden("log in first") }
        return scope
    }
}

/// Gateway-level refusals, each with its stable code (docs/PROTOCOL.md, "Error codes").
enum CommandRefusal {
    static func unknown(_ verb: String) -> (code: String, text: String) {
        ("UNKNOWN_COMMAND", "Unknown command '\(verb.prefix(32))'. Type HELP for the commands you can use.")
    }
    static let notLoggedIn = (code: "NOT_LOGGED_IN", text: "Log in first: LOGIN <email> <password>. Type HELP for what works before login.")
    static let alreadyLoggedIn = (code: "ALREADY_LOGGED_IN", text: "You are already logged in. QUIT and reconnect to log in as someone else.")
    static func forbidden(_ verb: String, _ role: Role) -> (code: String, text: String) {
        ("FORBIDDEN", "\(verb) is not available to the \(role.rawValue) role. Type HELP for the commands you can use.")
    }
    static func tlsRequired(_ verb: String, port: Int) -> (code: String, text: String) {
        let what = verb == "LOGIN" ? "Log in" : "Use \(verb)"
        return ("TLS_REQUIRED", "\(what) over TLS on port \(port) (this connection is not encrypted).")
    }
    static func needParams(_ usage: String) -> (code: String, text: String) {
        ("NEED_PARAMS", "Not enough parameters. Usage: \(usage)")
    }
    static func tooManyParams(_ usage: String) -> (code: String, text: String) {
        ("TOO_MANY_PARAMS", "Too many parameters. Usage: \(usage)")
    }
}

/// The command table. A name may have one entry per set of roles (CALL and CALLS mean one thing
/// to a customer and another to an agent); the session runs the entry meant for its role.
struct CommandTable: Sendable {
    let commands: [Command]
    private let byName: [String: [Command]]

    init(_ commands: [Command]) {
        self.commands = commands
        self.byName = Dictionary(grouping: commands, by: \.name)
        for (name, entries) in byName where entries.count > 1 {
            for (i, a) in entries.enumerated() {
                for b in entries[(i + 1)...] {
                    precondition(a.access.roles.isDisjoint(with: b.access.roles) && !(a.access.beforeLogin && b.access.beforeLogin),
                                 "two \(name) entries for the same role")
                }
            }
        }
    }

    /// The entry of `verb` for `scope` (nil: not logged in); if none is for it, the first one,
    /// whose access check then refuses with the right error. Nil for an unknown command.
    func command(_ verb: String, for scope: SessionScope?) -> Command? {
        guard let entries = byName[verb] else { return nil }
        return entries.first { $0.isAvailable(to: scope) } ?? entries.first
    }

    /// Every command, in HELP order.
    static let standard: CommandTable = CommandTable([
        .help, .login, .me, .ping, .pong, .quit,
        .tickets, .new, .show, .history, .msg, .close, .call, .calls, .profile, .passwd,
        .queue, .join, .part, .note, .assign, .status, .callQueue, .callHandling, .agents, .away, .back,
        .customer, .notifications, .read,
    ])

    /// Matches `message`'s parameters to `command`'s shape. Returns nil and a refusal if they do
    /// not fit.
    static func arguments(for command: Command, from message: ClientMessage) -> Result<Arguments, CommandError> {
        var args = Arguments()
        let params = message.params
        for (index, shape) in command.parameters.enumerated() {
            if index >= params.count {
                if shape.isRequired { return .failure(CommandError(CommandRefusal.needParams(command.usage))) }
                break
            }
            if shape.isText {
                args[shape.name] = message.rest(from: index)
                return .success(args)
            }
            args[shape.name] = params[index]
        }
        if params.count > command.parameters.count {
            return .failure(CommandError(CommandRefusal.tooManyParams(command.usage)))
        }
        return .success(args)
    }
}

/// A refusal before the handler runs.
struct CommandError: Error {
    var code: String
    var text: String
    init(_ refusal: (code: String, text: String)) {
        self.code = refusal.code
        self.text = refusal.text
    }
}
