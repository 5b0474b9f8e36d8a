import DesklineCore
import DesklineProtocol
import Foundation
import Logging
import NIOCore
import Synchronization

/// The IRC dialect of one connection (docs/IRC.md): registration (CAP, SASL PLAIN, PASS,
/// NICK/USER) ends in the welcome burst; tickets are channels; commands IRC has no verb for go
/// to the service user `Deskline` or are sent raw, and run through the native command table.
///
/// Its state lives on the connection's event loop: ``prepare(_:scope:)``, the work it returns
/// (which runs in a task on that loop) and ``push(_:)`` all run there.
final class IRCConnection: ConnectionDialect {
    /// The server's name in sources and numerics.
    static let serverName = "deskline"
    /// The service user's full source.
    static let serviceSource = "\(NickDirectory.service)!service@\(serverName)"
    /// The capabilities offered, with their `CAP LS 302` values.
    static let capabilities: [(name: String, value: String?)] = [
        ("batch", nil), ("draft/chathistory", nil), ("echo-message", nil), ("labeled-response", nil), ("message-tags", nil),
        ("sasl", "PLAIN"), ("server-time", nil),
    ]
    /// A SASL message is sent in chunks of this many bytes; a shorter one ends it.
    static let saslChunk = 400
    /// The most base64 a SASL PLAIN exchange may send (an email and a password fit many times).
    static let saslMaximum = 4 * saslChunk
    /// Entries replayed when a channel is joined with `JOIN`.
    static let replayedEntries = TicketService.showEntries

    let session: Session
    let eventLoop: any EventLoop
    let startedAt: Date
    let state: NIOLoopBoundBox<State>
    /// The client asked for echo-message: the hub hands it its own events too (read off the loop).
    let echoes = Atomic<Bool>(false)

    var services: GatewayServices { session.services }

    struct State {
        var caps: Set<String> = []
        /// `CAP LS` or `CAP REQ` was sent before registration and `CAP END` not yet.
        var capNegotiating = false
        var requestedNick: String?
        var userGiven = false
        var password: String?
        var sasl: SASL = .idle
        /// The registration's login is running.
        var registering = false
        /// Set once the welcome burst is written (in the same turn of the loop).
        var registered: Registered?
        /// While registration or a JOIN runs, pushes wait so they follow its reply.
        var holdingPushes = 0
        var heldEvents: [Held] = []
        /// For each open channel: its assignee as last seen (nil: none), and the staff this session
        /// has shown as listed in it (besides itself). Changes are shown as the difference
        /// between what is listed and what the hub says now, so their order does not matter.
        var assignees: [TicketID: UserID?] = [:]
        var listed: [TicketID: Set<UserID>] = [:]
        /// The last batch reference handed out.
        var batches = 0
        /// Channels the client left with PART: not joined again on their own.
        var parted: Set<TicketID> = []
        /// Channel messages sent with echo-message on, waiting for their echo, oldest first.
        var pendingEchoes: [PendingEcho] = []
        var echoes = 0
        /// The label of the line being prepared (labeled-response), and whether its command
        /// answers it itself (a message: its echo is the labelled response).
        var label: String?
        var labelTaken = false

        var nick: String { registered?.nick ?? requestedNick ?? "*" }
    }

    /// A message whose echo is to come: matched to its stored entry by ticket, kind and text, in
    /// the order the messages were sent (every one is listed, labelled or not).
    /// What waits while pushes are held.
    enum Held {
        case event(TicketEvent)
        case follow(SessionHub.FollowChange)
    }

    struct PendingEcho {
        var token: Int
        var ticket: TicketID
        var note: Bool
        /// Sent as NOTICE: echoed as NOTICE.
        var notice: Bool
        var text: String
        var label: String?
    }

    enum SASL {
        case idle
        /// `AUTHENTICATE PLAIN` was accepted; base64 chunks so far.
        case receiving(String)
        /// The login is being checked.
        case checking
        case authenticated(SessionScope)
    }

    struct Registered {
        var scope: SessionScope
        var nick: String
        var outbox: Outbox
        /// The tickets the client has as open channels.
        var channels: Set<TicketID> = []
        var tenantName: String
        var motd: String?
    }

    init(session: Session, eventLoop: any EventLoop, startedAt: Date) {
        self.session = session
        self.eventLoop = eventLoop
        self.startedAt = startedAt
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    // MARK: Lines

    func greeting() -> [ByteBuffer] { [] }

    func notice(_ notice: ConnectionNotice) -> ByteBuffer {
        Self.line(for: notice).encoded
    }

    static func line(for notice: ConnectionNotice) -> IRCLine {
        switch notice {
        case .ping(let token): IRCLine(source: nil, "PING", trailing: token)
        case .closing(let code, let text): IRCLine(source: nil, "ERROR", trailing: "Closing link: \(closingReason(code) ?? text)")
        case .shuttingDown: IRCLine(source: nil, "ERROR", trailing: "Closing link: the server is shutting down; reconnect later")
        }
    }

    private static func closingReason(_ code: String) -> String? {
        switch code {
        case "REGISTRATION_TIMEOUT": "registration timed out (no login)"
        case "PING_TIMEOUT": "ping timeout"
        case "SHUTTING_DOWN": "the server is shutting down; reconnect later"
        default: nil
        }
    }

    /// A numeric from the server to this client (`:deskline 001 <nick> ...`).
    func numeric(_ code: String, _ params: [String] = [], _ text: String? = nil) -> IRCLine {
        IRCLine(source: Self.serverName, code, [state.value.nick] + params, trailing: text)
    }

    /// A notice from the service user to this client.
    func serviceNotice(_ text: String) -> IRCLine {
        IRCLine(source: Self.serviceSource, "NOTICE", [state.value.nick], trailing: text)
    }

    static func answered(_ lines: [IRCLine], scope: SessionScope?, quit: Bool = false) -> PreparedLine {
        .answered(LineOutcome(lines: lines.map(\.encoded), scope: scope, quit: quit))
    }

    // MARK: Dispatch

    func prepare(_ frame: LineFrame, scope: SessionScope?) -> PreparedLine {
        // labeled-response: the reply to a labelled command carries its label (one line), comes
        // in a labelled batch (several), or is an ACK (none). (A label over 64 bytes is ignored.)
        var label: String?
        if state.value.caps.contains("labeled-response"), case .line(let buffer) = frame {
            label = ClientMessage.label(inUnparsedLine: String(decoding: buffer.readableBytesView, as: UTF8.self))
        }
        state.value.label = label
        state.value.labelTaken = false
        let prepared = prepareLine(frame, scope: scope)
        state.value.label = nil
        guard let label, !state.value.labelTaken else { return prepared }
        switch prepared {
        case .answered(var outcome):
            outcome.lines = labeled(outcome.lines, label)
            return .answered(outcome)
        case .work(let pipelines, let run):
            return .work(pipelines: pipelines) { r in
                var outcome = await run(r)
                outcome.lines = self.labeled(outcome.lines, label)
                return outcome
            }
        }
    }

    /// A fresh batch reference for this connection.
    func nextBatch() -> String {
        state.value.batches += 1
        return String(state.value.batches)
    }

    /// `lines` as the labelled response to one command.
    func labeled(_ buffers: [ByteBuffer], _ label: String) -> [ByteBuffer] {
        let tag = "label=" + TagValue.escape(label)
        // One wire line per buffer (a long message's buffer holds several).
        let lines = buffers.flatMap { buffer in
            String(decoding: buffer.readableBytesView, as: UTF8.self).split(separator: "\r\n").map { ByteBuffer(string: $0 + "\r\n") }
        }
        if lines.isEmpty { return [Self.tagged(IRCLine(source: Self.serverName, "ACK").encoded, tag)] }
        if lines.count == 1 { return [Self.tagged(lines[0], tag)] }
        if !state.value.caps.contains("batch") { return [Self.tagged(lines[0], tag)] + lines.dropFirst() }
        let ref = nextBatch()
        return [Self.tagged(IRCLine(source: Self.serverName, "BATCH", ["+" + ref, "labeled-response"]).encoded, tag)]
            + lines.map { Self.tagged($0, "batch=" + ref, unlessTagged: "batch=") }
            + [IRCLine(source: Self.serverName, "BATCH", ["-" + ref]).encoded]
    }

    /// `lines` inside a batch of `type` when the client has `batch` (otherwise as they are).
    func inBatch(_ type: String, _ params: [String], _ lines: [IRCLine]) -> [IRCLine] {
        guard state.value.caps.contains("batch") else { return lines }
        let ref = nextBatch()
        return [IRCLine(source: Self.serverName, "BATCH", ["+" + ref, type] + params)]
            + lines.map { line in
                var line = line
                line.tags.insert((key: "batch", value: ref), at: 0)
                return line
            }
            + [IRCLine(source: Self.serverName, "BATCH", ["-" + ref])]
    }

    /// Wire lines with one more tag in front of each (not of one that already has a tag starting
    /// `unlessTagged`).
    static func tagged(_ buffer: ByteBuffer, _ tag: String, unlessTagged: String? = nil) -> ByteBuffer {
        var out = ""
        for text in String(decoding: buffer.readableBytesView, as: UTF8.self).split(separator: "\r\n") {
            if !text.hasPrefix("@") {
                out += "@" + tag + " " + text
            } else if let unlessTagged, text.dropFirst().prefix(while: { $0 != " " }).split(separator: ";").contains(where: { $0.hasPrefix(unlessTagged) }) {
                out += text
            } else {
                out += "@" + tag + ";" + text.dropFirst()
            }
            out += "\r\n"
        }
        return ByteBuffer(string: out)
    }

    private func prepareLine(_ frame: LineFrame, scope: SessionScope?) -> PreparedLine {
        guard case .line(let buffer) = frame else {
            return Self.answered([numeric("417", [], "Input line was too long (more than \(session.limits.maxLineBytes) bytes); it was discarded")], scope: scope)
        }
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self) else {
            return Self.answered([IRCLine(source: Self.serverName, "FAIL", ["*", "INVALID_UTF8"], trailing: "The line is not valid UTF-8; it was discarded")], scope: scope)
        }
        if buffer.readableBytesView.contains(0) {
            return Self.answered([IRCLine(source: Self.serverName, "FAIL", ["*", "NUL_BYTE"], trailing: "The line contains a NUL byte; it was discarded")], scope: scope)
        }
        let message: ClientMessage
        do {
            guard let parsed = try ClientMessage.parse(text) else { return Self.answered([], scope: scope) }
            message = parsed
        } catch {
            if error.code == "INVALID_COMMAND" {
                // Not a word IRC or Deskline knows (FOO_BAR): an unknown command, as ever.
                let verb = Self.verb(inUnparsedLine: text)
                return Self.answered([numeric("421", [verb], "Unknown command")], scope: scope)
            }
            return Self.answered([IRCLine(source: Self.serverName, "FAIL", ["*", error.code], trailing: error.message)], scope: scope)
        }
        let verb = message.verb
        if state.value.registered == nil {
            return prepareRegistration(verb, message, scope: scope)
        }
        return prepareRegistered(verb, message, text: text, scope: scope)
    }

    /// The command word of a line that did not parse (after any tags and source), cut short.
    static func verb(inUnparsedLine line: String) -> String {
        var words = line.split(separator: " ", omittingEmptySubsequences: true)[...]
        if words.first?.hasPrefix("@") == true { words = words.dropFirst() }
        if words.first?.hasPrefix(":") == true { words = words.dropFirst() }
        return String((words.first ?? "*").prefix(32))
    }

    private func prepareRegistration(_ verb: String, _ message: ClientMessage, scope: SessionScope?) -> PreparedLine {
        switch verb {
        case "CAP": return cap(message, scope: scope)
        case "AUTHENTICATE": return authenticate(message)
        case "PASS":
            guard let password = message.rest(from: 0) else { return Self.answered([needMoreParams("PASS")], scope: scope) }
            if let refused = tlsRefusal() { return refused }
            state.value.password = password
            return Self.answered([], scope: scope)
        case "NICK":
            guard let nick = message.params.first, !nick.isEmpty else {
                return Self.answered([numeric("431", [], "No nickname given")], scope: scope)
            }
            state.value.requestedNick = IRCLine.middle(String(nick.prefix(NickDirectory.maximumLength)))
            return completeRegistration() ?? Self.answered([], scope: scope)
        case "USER":
            guard message.params.count >= 4, !message.params[0].isEmpty, !message.params[3].isEmpty else {
                return Self.answered([needMoreParams("USER")], scope: scope)
            }
            state.value.userGiven = true
            return completeRegistration() ?? Self.answered([], scope: scope)
        case "PING": return Self.answered([pong(message)], scope: scope)
        case "PONG": return Self.answered([], scope: scope)
        case "QUIT": return Self.answered([IRCLine(source: nil, "ERROR", trailing: "Closing link: quit")], scope: scope, quit: true)
        default:
            return Self.answered([numeric("451", [], "You have not registered: log in with SASL PLAIN or PASS <email>:<password>")], scope: scope)
        }
    }

    private func prepareRegistered(_ verb: String, _ message: ClientMessage, text: String, scope: SessionScope?) -> PreparedLine {
        guard let scope else { return Self.answered([], scope: scope) }
        switch verb {
        case "CAP": return cap(message, scope: scope)
        case "AUTHENTICATE": return Self.answered([numeric("907", [], "You have already authenticated")], scope: scope)
        case "PASS", "USER": return Self.answered([numeric("462", [], "You may not reregister")], scope: scope)
        case "NICK":
            return Self.answered([numeric("447", [], "Your nick comes from your name in the helpdesk (\(state.value.nick)); it cannot be changed here")], scope: scope)
        case "PING": return Self.answered([pong(message)], scope: scope)
        case "PONG", "TAGMSG": return Self.answered([], scope: scope)
        case "QUIT":
            let reason = message.params.first.map { "Quit: \($0)" } ?? "Quit"
            return Self.answered([IRCLine(source: nil, "ERROR", trailing: "Closing link: \(state.value.nick) (\(reason))")], scope: scope, quit: true)
        case "PRIVMSG", "NOTICE": return privmsg(message, notice: verb == "NOTICE", scope: scope)
        case "JOIN": return join(message, scope: scope)
        case "PART": return part(message, scope: scope)
        case "TOPIC": return topic(message, scope: scope)
        case "NAMES": return names(message, scope: scope)
        case "MODE": return mode(message, scope: scope)
        case "WHO": return who(message, scope: scope)
        case "WHOIS": return whois(message, scope: scope)
        case "LIST": return list(scope: scope)
        case "AWAY": return away(message, scope: scope)
        case "MOTD": return Self.answered(motdLines(), scope: scope)
        case "CHATHISTORY": return chathistory(message, scope: scope)
        case "HELP": return serviceCommand("HELP " + message.params.joined(separator: " "), scope: scope)
        default: return serviceCommand(text, scope: scope, raw: verb)
        }
    }

    func needMoreParams(_ verb: String) -> IRCLine {
        numeric("461", [verb], "Not enough parameters")
    }

    private func pong(_ message: ClientMessage) -> IRCLine {
        guard let token = message.params.last else { return needMoreParams("PING") }
        return IRCLine(source: Self.serverName, "PONG", [Self.serverName], trailing: token)
    }

    /// With `tls.requireTLSForLogin` on a plaintext connection: the refusal of a password.
    private func tlsRefusal() -> PreparedLine? {
        guard let port = session.security.tlsPortForPasswords else { return nil }
        return Self.answered([numeric("464", [], "Log in over TLS on port \(port) (this connection is not encrypted)"),
                              IRCLine(source: nil, "ERROR", trailing: "Closing link: log in over TLS on port \(port)")],
                             scope: nil, quit: true)
    }

    // MARK: CAP

    private func cap(_ message: ClientMessage, scope: SessionScope?) -> PreparedLine {
        let sub = message.params.first?.uppercased() ?? ""
        let registered = state.value.registered != nil
        func reply(_ sub: String, _ text: String) -> IRCLine {
            IRCLine(source: Self.serverName, "CAP", [state.value.nick, sub], trailing: text)
        }
        switch sub {
        case "LS":
            if !registered { state.value.capNegotiating = true }
            let v302 = (message.params.dropFirst().first.flatMap { Int($0) } ?? 0) >= 302
            let offered = Self.capabilities.map { cap in v302 ? cap.value.map { "\(cap.name)=\($0)" } ?? cap.name : cap.name }
            return Self.answered([reply("LS", offered.joined(separator: " "))], scope: scope)
        case "LIST":
            return Self.answered([reply("LIST", state.value.caps.sorted().joined(separator: " "))], scope: scope)
        case "REQ":
            if !registered { state.value.capNegotiating = true }
            let wanted = (message.params.dropFirst().first ?? "").split(separator: " ").map(String.init)
            let known = Set(Self.capabilities.map(\.name))
            let all = wanted.allSatisfy { known.contains($0.hasPrefix("-") ? String($0.dropFirst()) : $0) }
            guard all, !wanted.isEmpty else { return Self.answered([reply("NAK", wanted.joined(separator: " "))], scope: scope) }
            for cap in wanted {
                if cap.hasPrefix("-") { state.value.caps.remove(String(cap.dropFirst())) } else { state.value.caps.insert(cap) }
            }
            echoes.store(state.value.caps.contains("echo-message"), ordering: .relaxed)
            return Self.answered([reply("ACK", wanted.joined(separator: " "))], scope: scope)
        case "END":
            guard !registered else { return Self.answered([], scope: scope) }
            state.value.capNegotiating = false
            return completeRegistration() ?? Self.answered([], scope: scope)
        default:
            return Self.answered([numeric("410", [String(sub.prefix(20))], "Invalid CAP command")], scope: scope)
        }
    }

    // MARK: SASL

    private func authenticate(_ message: ClientMessage) -> PreparedLine {
        guard let argument = message.params.first else { return Self.answered([needMoreParams("AUTHENTICATE")], scope: nil) }
        let failed = numeric("904", [], "SASL authentication failed")
        switch state.value.sasl {
        case .authenticated:
            return Self.answered([numeric("907", [], "You have already authenticated")], scope: nil)
        case .checking:
            return Self.answered([numeric("904", [], "SASL authentication is already being checked")], scope: nil)
        case .idle:
            if argument == "*" { return Self.answered([numeric("906", [], "SASL authentication aborted")], scope: nil) }
            guard argument.uppercased() == "PLAIN" else {
                return Self.answered([numeric("908", ["PLAIN"], "are available SASL mechanisms"), failed], scope: nil)
            }
            if let refused = tlsRefusal() { return refused }
            state.value.sasl = .receiving("")
            return Self.answered([IRCLine(source: nil, "AUTHENTICATE", ["+"])], scope: nil)
        case .receiving(let sofar):
            if argument == "*" {
                state.value.sasl = .idle
                return Self.answered([numeric("906", [], "SASL authentication aborted")], scope: nil)
            }
            guard argument.utf8.count <= Self.saslChunk else {
                state.value.sasl = .idle
                return Self.answered([numeric("905", [], "SASL message too long")], scope: nil)
            }
            // Chunks of 400 may go on for ever; past what any login needs, it is a failure.
            guard sofar.utf8.count + argument.utf8.count <= Self.saslMaximum else {
                state.value.sasl = .idle
                return Self.answered([numeric("904", [], "SASL authentication failed: the message is too long")], scope: nil)
            }
            let data = argument == "+" ? sofar : sofar + argument
            if argument.utf8.count == Self.saslChunk {
                state.value.sasl = .receiving(data)
                return Self.answered([], scope: nil)
            }
            let parts = Data(base64Encoded: data).map { [UInt8]($0).split(separator: 0, omittingEmptySubsequences: false) } ?? []
            guard parts.count == 3, let login = String(validating: parts[1], as: UTF8.self),
                  let password = String(validating: parts[2], as: UTF8.self), !login.isEmpty,
                  parts[0].isEmpty || parts[0] == parts[1]
            else {
                state.value.sasl = .idle
                return Self.answered([failed], scope: nil)
            }
            state.value.sasl = .checking
            return .work(pipelines: false) { run in await self.checkSASL(login, password, run) }
        }
    }

    private func checkSASL(_ login: String, _ password: String, _ run: CommandRun) async -> LineOutcome {
        do throws(DesklineError) {
            let scope = try await Command.authenticate(login, password: password, services: services,
                                                       remoteAddress: session.remoteAddress, logger: run.logger)
            state.value.sasl = .authenticated(scope)
            let nick = state.value.nick
            let account = login.contains("/") ? login : "\(scope.tenantId)/\(login)"
            let lines = [numeric("900", ["\(nick)!\(scope.userId)@\(scope.tenantId)", account],
                                 "You are now logged in as \(login)"),
                         numeric("903", [], "SASL authentication successful")]
            return LineOutcome(lines: lines.map(\.encoded), scope: nil)
        } catch {
            state.value.sasl = .idle
            let text = switch error.code {
            case "THROTTLED": "SASL authentication failed: \(error.message)"
            case "BUSY": "SASL authentication failed: the server is busy checking passwords; try again in a moment"
            default: "SASL authentication failed"
            }
            return LineOutcome(lines: [numeric("904", [], text).encoded], scope: nil)
        }
    }
}
