import DesklineCore
import DesklineProtocol
import Foundation
import NIOCore

// Registration ends when NICK and USER were given and CAP negotiation is over: with the SASL
// login, or by checking PASS. Then the session joins the hub and gets the welcome burst:
// 001-005, the MOTD, its channels and the unread notifications.

extension IRCConnection {
    /// The work that completes registration, once everything it needs was sent; nil before.
    func completeRegistration() -> PreparedLine? {
        let s = state.value
        guard s.requestedNick != nil, s.userGiven, !s.capNegotiating, !s.registering, s.registered == nil else { return nil }
        state.value.registering = true
        if case .authenticated(let scope) = s.sasl {
            return .work(pipelines: false) { run in await self.register(scope, run) }
        }
        guard let password = s.password else {
            return Self.answered(refusal("This helpdesk needs a login: use SASL PLAIN, or PASS <email>:<password> (or <tenant>/<email>:<password>)"),
                                 scope: nil, quit: true)
        }
        guard let colon = password.firstIndex(of: ":"), colon != password.startIndex else {
            return Self.answered(refusal("PASS must be <email>:<password> (or <tenant>/<email>:<password>)"), scope: nil, quit: true)
        }
        let login = String(password[..<colon])
        let secret = String(password[password.index(after: colon)...])
        return .work(pipelines: false) { run in
            do throws(DesklineError) {
                let scope = try await Command.authenticate(login, password: secret, services: self.services,
                                                           remoteAddress: self.session.remoteAddress, logger: run.logger)
                return await self.register(scope, run)
            } catch {
                let text = switch error.code {
                case "THROTTLED": "Password incorrect; \(error.message)"
                case "BUSY": "The server is busy checking passwords; try again in a moment"
                default: "Password incorrect"
                }
                return LineOutcome(lines: self.refusal(text).map(\.encoded), scope: nil, quit: true)
            }
        }
    }

    /// Reads the tenant's users into the nick directory when it has not, or not lately.
    func loadNicks(_ tenant: TenantID) async throws(DesklineError) {
        guard services.nicks.needsLoading(tenant) else { return }
        services.nicks.load(try await services.store.users(in: tenant), in: tenant)
    }

    /// `464` and the closing `ERROR`: a connection that cannot log in is not left hanging.
    func refusal(_ text: String) -> [IRCLine] {
        [numeric("464", [], text), IRCLine(source: nil, "ERROR", trailing: "Closing link: \(text)")]
    }

    /// Logs the session in as `scope` and writes the welcome burst. Pushes that arrive while it
    /// runs wait, and follow the burst.
    func register(_ scope: SessionScope, _ run: CommandRun) async -> LineOutcome {
        let hub = services.hub
        let here = scope.onSession(hub.sessionID(session.id))
        state.value.holdingPushes += 1
        state.value.password = nil
        do throws(DesklineError) {
            try await loadNicks(scope.tenantId)
            let profile = try await services.accounts.profile(here)
            let nick = services.nicks.nick(of: scope.userId, named: profile.user.displayName, in: scope.tenantId)
            state.value.registered = Registered(scope: here, nick: nick, outbox: run.outbox, tenantName: profile.tenant.name,
                                                motd: profile.tenant.motd)
            // Receive events from now on (they wait until the burst is out), then read what to show.
            hub.attach(session.id, scope: here, outbox: run.outbox, irc: self)
            // (The other nodes of a shared store see the session before the welcome is out.)
            await hub.presence.published()
            let tickets = try await here.role.isStaff ? services.tickets.queue(here, .mine) : services.tickets.list(here, status: nil)
            let unread = try await services.notifications.unreadCount(here)
            var lines = welcome(profile)
            for ticket in tickets.reversed() where ticket.status != .closed {
                openChannel(ticket)
                // Staff follow what they have open, also once it is assigned to someone else.
                if here.role.isStaff { _ = hub.setJoined(session.id, ticket.id, true) }
                lines += joinBurst(ticket)
            }
            if unread > 0 {
                lines.append(serviceNotice("You have \(unread) unread notifications: /msg \(NickDirectory.service) NOTIFICATIONS lists them, /msg \(NickDirectory.service) READ all marks them read."))
            }
            run.logger.info("login", metadata: ["tenant": "\(scope.tenantId)", "user": "\(scope.userId)",
                                                "role": "\(scope.role.rawValue)", "dialect": "irc"])
            return LineOutcome(lines: lines.map(\.encoded), scope: scope, written: { self.releasePushes() })
        } catch {
            state.value.holdingPushes -= 1
            state.value.heldEvents = []
            state.value.registered = nil
            hub.detach(session.id)
            run.logger.error("IRC registration failed", metadata: ["error": "\(error.message)"])
            return LineOutcome(lines: [IRCLine(source: nil, "ERROR", trailing: "Closing link: \(error.message)").encoded], scope: nil, quit: true)
        }
    }

    /// 001-005 and the MOTD.
    private func welcome(_ profile: AccountService.Profile) -> [IRCLine] {
        let version = "deskline-\(DesklineVersion.current)"
        var lines = [
            numeric("001", [], "Welcome to the \(profile.tenant.name) helpdesk, \(profile.user.displayName) (\(state.value.nick))"),
            numeric("002", [], "Your host is \(Self.serverName), running version \(version)"),
            numeric("003", [], "This server was created \(Timestamp.format(startedAt))"),
            numeric("004", [Self.serverName, version, "i", "bnot"]),
        ]
        let tokens = Self.isupport(network: profile.tenant.name)
        for start in stride(from: 0, to: tokens.count, by: 12) {
            lines.append(numeric("005", Array(tokens[start..<min(start + 12, tokens.count)]), "are supported by this server"))
        }
        return lines + motdLines()
    }

    /// ISUPPORT, truthfully: what the dialect does.
    static func isupport(network: String) -> [String] {
        [
            "AWAYLEN=\(InputRules.maximumMessageLength)", "CASEMAPPING=ascii", "CHANLIMIT=#:", "CHANMODES=b,,,nt",
            "CHATHISTORY=\(TicketService.maximumHistoryLimit)",
            "CHANNELLEN=16", "CHANTYPES=#", "ELIST=", "HOSTLEN=64", "MODES=1",
            "MSGREFTYPES=msgid,timestamp", "NETWORK=\(Self.isupportValue(network))", "NICKLEN=\(NickDirectory.maximumLength)", "PREFIX=(o)@",
            "STATUSMSG=@", "TARGMAX=PRIVMSG:1,NOTICE:1,NAMES:1,WHOIS:1,JOIN:,PART:",
            "TOPICLEN=\(InputRules.maximumSubjectLength + 60)", "USERLEN=16", "UTF8ONLY",
        ]
    }

    /// An ISUPPORT value: space, `\` and `=` (and anything not printable ASCII) as `\xHH`.
    static func isupportValue(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            if byte > 0x20, byte < 0x7F, byte != UInt8(ascii: "\\"), byte != UInt8(ascii: "=") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "\\x" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// The tenant's message of the day (`deskline tenant motd`), or 422.
    func motdLines() -> [IRCLine] {
        guard let motd = state.value.registered?.motd, !motd.isEmpty else {
            return [numeric("422", [], "MOTD File is missing (an admin sets one with deskline tenant motd)")]
        }
        return [numeric("375", [], "- \(Self.serverName) Message of the day -")]
            + motd.split(separator: "\n", omittingEmptySubsequences: false).map { numeric("372", [], "- \($0)") }
            + [numeric("376", [], "End of /MOTD command.")]
    }

    /// On the event loop, once the reply of the command that held pushes is written: ends the
    /// hold and writes the events that waited. `replayed`: the last entry a JOIN replayed per
    /// ticket; a held event of an entry up to it is not shown twice.
    func releasePushes(replayed: [TicketID: EntryPosition] = [:]) {
        state.value.holdingPushes -= 1
        guard state.value.holdingPushes == 0, let outbox = state.value.registered?.outbox else { return }
        let held = state.value.heldEvents
        state.value.heldEvents = []
        var lines: [IRCLine] = []
        for item in held {
            switch item {
            case .event(let event):
                if let ticket = event.ticket?.id, let entry = event.entry, let last = replayed[ticket], !(last < entry.position) { continue }
                lines += render(event)
            case .follow(let change):
                lines += render(change)
            }
        }
        Self.write(lines, to: outbox)
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
