import DesklineCore
import DesklineProtocol
import NIOCore

// Tickets are channels: #1001 is ticket #1001. Who may see a channel is who may see the
// ticket (TicketService decides); a ticket that is not yours is "No such channel", exactly
// like one that does not exist.

extension IRCConnection {
    /// `#1001` → ticket 1001; anything else is no ticket.
    static func ticket(_ channel: String) -> TicketID? {
        guard channel.hasPrefix("#") else { return nil }
        return TicketID(parsing: channel)
    }

    static func channel(_ id: TicketID) -> String { id.description }

    /// The source of this client's own lines.
    var selfSource: String {
        let s = state.value
        guard let r = s.registered else { return s.nick }
        return "\(r.nick)!\(r.scope.userId)@\(r.scope.tenantId)"
    }

    /// Another user's source in this tenant.
    func source(of user: UserID, named name: String, in tenant: TenantID) -> String {
        "\(services.nicks.nick(of: user, named: name, in: tenant))!\(user)@\(tenant)"
    }

    func noSuchChannel(_ channel: String) -> IRCLine {
        numeric("403", [channel], "No such channel")
    }

    /// A failed command's reply: the numerics IRC clients know where there is one, a standard
    /// `FAIL` otherwise.
    func failure(_ error: DesklineError, verb: String, channel: String?) -> IRCLine {
        switch error.reason {
        case .noSuchTicket?: return noSuchChannel(channel ?? "*")
        case .ticketClosed(let id)?:
            return numeric("404", [channel ?? id.description], "Cannot send to channel: ticket \(id) is closed (open a new one: /msg \(NickDirectory.service) NEW <subject>)")
        default:
            if error.code == "FORBIDDEN" { return numeric("482", [channel ?? "*"], error.message) }
            return IRCLine(source: Self.serverName, "FAIL", [verb, error.code], trailing: NativeDialect.text(of: error))
        }
    }

    /// `subject [status, assignee]`.
    static func topic(_ t: Ticket) -> String {
        "\(t.subject) [\(t.status.rawValue), \(t.assigneeName.map { "assigned to \($0)" } ?? "unassigned")]"
    }

    /// The channel's members: its customer, then its staff as ops (the assignee and the staff
    /// following it), by nick.
    func members(of t: Ticket, scope: SessionScope) -> [(nick: String, user: UserID, op: Bool)] {
        let nicks = services.nicks
        var out: [(nick: String, user: UserID, op: Bool)] = []
        if let (user, name) = nicks.customerUser(t.customerId, in: scope.tenantId) {
            out.append((nicks.nick(of: user, named: name, in: scope.tenantId), user, false))
        }
        var staff = services.hub.followers(of: t.id, in: scope.tenantId)
        if let assignee = t.assigneeId { staff.insert(assignee) }
        for user in staff.sorted(by: { $0.rawValue < $1.rawValue }) where !out.contains(where: { $0.user == user }) {
            // (A follower the directory has not read yet is left out until it has: a nick made
            // up from an id would stick.)
            if let nick = nicks.knownNick(of: user, in: scope.tenantId) {
                out.append((nick, user, true))
            } else if user == t.assigneeId, let name = t.assigneeName {
                out.append((nicks.nick(of: user, named: name, in: scope.tenantId), user, true))
            }
        }
        return out
    }

    /// Opens a ticket's channel for this session (false if it is open): the hub learns it, to
    /// tell it when staff start or stop following, and the assignee shown is remembered.
    @discardableResult
    func openChannel(_ t: Ticket) -> Bool {
        guard state.value.registered?.channels.insert(t.id).inserted == true else { return false }
        state.value.assignees[t.id] = .some(t.assigneeId)
        services.hub.setOpen(session.id, t.id, true)
        return true
    }

    @discardableResult
    func closeChannel(_ id: TicketID) -> Bool {
        guard state.value.registered?.channels.remove(id) != nil else { return false }
        state.value.assignees[id] = nil
        state.value.listed[id] = nil
        services.hub.setOpen(session.id, id, false)
        return true
    }

    /// On the event loop: a staff user started or stopped following a ticket.
    func followChanged(_ change: SessionHub.FollowChange) {
        guard let registered = state.value.registered, !held(.follow(change), registered.outbox) else { return }
        Self.write(render(change), to: registered.outbox)
    }

    /// A follower joining or leaving an open channel, shown as the difference it makes.
    func render(_ change: SessionHub.FollowChange) -> [IRCLine] {
        switch change {
        case .started(_, let id), .stopped(_, let id), .elsewhere(let id): reconcile(id)
        }
    }

    /// When a pushed status change may have moved the ticket to another assignee.
    func assigneeChange(_ t: Ticket) -> [IRCLine] {
        guard state.value.assignees[t.id] != nil else { return [] }
        state.value.assignees[t.id] = .some(t.assigneeId)
        return reconcile(t.id, assigneeName: t.assigneeName)
    }

    /// `JOIN` (with `MODE +o`) or `PART` for every staff user whose listing in channel `id`
    /// differs between what this session has shown and what holds now: the ticket's followers
    /// (hub) and its assignee (as last seen). So a change that arrives late, twice, or in another
    /// order than the one it followed shows nothing wrong.
    func reconcile(_ id: TicketID, assigneeName: String? = nil) -> [IRCLine] {
        guard let scope = state.value.registered?.scope, state.value.registered?.channels.contains(id) == true else { return [] }
        var desired = services.hub.followers(of: id, in: scope.tenantId)
        if case let assignee?? = state.value.assignees[id] { desired.insert(assignee) }
        desired.remove(scope.userId)
        let listed = state.value.listed[id] ?? []
        var shown = listed
        var lines: [IRCLine] = []
        let channel = Self.channel(id)
        for user in desired.subtracting(listed).sorted(by: { $0.rawValue < $1.rawValue }) {
            let assignee = state.value.assignees[id] == .some(user)
            guard let nick = services.nicks.knownNick(of: user, in: scope.tenantId)
                    ?? (assignee ? assigneeName.map { services.nicks.nick(of: user, named: $0, in: scope.tenantId) } : nil) else { continue }
            lines += [IRCLine(source: "\(nick)!\(user)@\(scope.tenantId)", "JOIN", [channel]),
                      IRCLine(source: Self.serviceSource, "MODE", [channel, "+o", nick])]
            shown.insert(user)
        }
        for user in listed.subtracting(desired).sorted(by: { $0.rawValue < $1.rawValue }) {
            shown.remove(user)
            guard let nick = services.nicks.knownNick(of: user, in: scope.tenantId) else { continue }
            lines.append(IRCLine(source: "\(nick)!\(user)@\(scope.tenantId)", "PART", [channel]))
        }
        state.value.listed[id] = shown
        return lines
    }

    /// The JOIN echo, topic and names of a channel, as a client expects them after a JOIN.
    func joinBurst(_ t: Ticket) -> [IRCLine] {
        guard let scope = state.value.registered?.scope else { return [] }
        let channel = Self.channel(t.id)
        return [IRCLine(source: selfSource, "JOIN", [channel])] + topicLines(t) + namesLines(t, scope: scope)
    }

    func topicLines(_ t: Ticket) -> [IRCLine] {
        let channel = Self.channel(t.id)
        return [numeric("332", [channel], Self.topic(t)),
                numeric("333", [channel, Self.serviceSource, String(Int(t.updatedAt.timeIntervalSince1970))])]
    }

    func namesLines(_ t: Ticket, scope: SessionScope) -> [IRCLine] {
        let channel = Self.channel(t.id)
        let members = members(of: t, scope: scope)
        if state.value.registered?.channels.contains(t.id) == true {
            // What this session now shows as listed: later changes are the difference to it.
            state.value.listed[t.id] = Set(members.filter { $0.op && $0.user != scope.userId }.map(\.user))
        }
        let names = members.map { ($0.op ? "@" : "") + $0.nick }
        return [numeric("353", ["=", channel], names.joined(separator: " ")), numeric("366", [channel], "End of /NAMES list.")]
    }

    /// A ticket entry as the line a client shows: a message in the channel, a note to its ops,
    /// a status change as a notice from the service. `replay`: an old entry, shown with its time.
    /// `now`: the ticket right after the entry (a pushed one), so an assignment names the new
    /// assignee by nick, which their client highlights.
    func entryLine(_ e: TicketEntry, in id: TicketID, tenant: TenantID, replay: Bool = false, now: Ticket? = nil) -> IRCLine {
        let caps = state.value.caps
        var tags: [(key: String, value: String)] = []
        if caps.contains("server-time") { tags.append(("time", Timestamp.format(e.at))) }
        if caps.contains("message-tags") { tags.append(("msgid", "\(id.number).\(e.messageID)")) }
        var text = e.text
        if replay, !caps.contains("server-time") { text = "[\(Timestamp.format(e.at))] " + text }
        let channel = Self.channel(id)
        switch e.kind {
        case .message:
            return IRCLine(tags: tags, source: source(of: e.authorId, named: e.authorName, in: tenant), "PRIVMSG", [channel], trailing: text)
        case .note:
            return IRCLine(tags: tags, source: source(of: e.authorId, named: e.authorName, in: tenant), "PRIVMSG", ["@" + channel], trailing: text)
        case .status:
            // Core's texts: a status ("pending") or what changed ("assigned to Amy Agent").
            var change = e.text
            if let now, let assignee = now.assigneeId, let name = now.assigneeName, e.text == "assigned to \(name)" {
                change = "assigned to \(services.nicks.nick(of: assignee, named: name, in: tenant)) (\(name))"
            }
            let what = TicketStatus(rawValue: e.text) != nil ? "\(e.authorName) set \(channel) to \(e.text)" : "\(channel) \(change) by \(e.authorName)"
            return IRCLine(tags: tags, source: Self.serviceSource, "NOTICE", [channel], trailing: replay && !caps.contains("server-time") ? "[\(Timestamp.format(e.at))] \(what)" : what)
        }
    }

    // MARK: Commands

    func join(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        guard let list = message.params.first else { return Self.answered([needMoreParams("JOIN")], scope: scope) }
        if list == "0" { return partAll(scope: scope) }
        let channels = list.split(separator: ",").map(String.init)
        return .work(pipelines: false) { run in
            // Pushes wait until the JOIN's lines are out, so nothing of a channel comes before
            // its JOIN; one already replayed is not shown again.
            self.state.value.holdingPushes += 1
            var replayed: [TicketID: EntryPosition] = [:]
            var lines: [IRCLine] = []
            try? await self.loadNicks(scope.tenantId)
            for channel in channels.prefix(20) {
                guard let id = Self.ticket(channel) else {
                    lines.append(self.noSuchChannel(channel))
                    continue
                }
                guard self.state.value.registered?.channels.contains(id) == false else { continue }
                // Follow first, then read: an entry stored in between is pushed or replayed.
                let followed = scope.role.isStaff && self.services.hub.setJoined(self.session.id, id, true)
                do throws(DesklineError) {
                    let (ticket, entries) = try await self.services.tickets.show(scope, id)
                    guard self.openChannel(ticket) else { continue }
                    self.state.value.parted.remove(id)
                    lines += self.joinBurst(ticket)
                    let shown = entries.suffix(Self.replayedEntries)
                    replayed[id] = shown.last?.position ?? EntryPosition(0, note: 0)
                    let replay = shown.map { self.entryLine($0, in: id, tenant: scope.tenantId, replay: true) }
                    lines += self.state.value.caps.contains("draft/chathistory") ? self.inBatch("chathistory", [channel], replay) : replay
                } catch {
                    if followed { _ = self.services.hub.setJoined(self.session.id, id, false) }
                    lines.append(self.failure(error, verb: "JOIN", channel: channel))
                }
            }
            return LineOutcome(lines: lines.map(\.encoded), scope: scope, written: { [replayed] in self.releasePushes(replayed: replayed) })
        }
    }

    func part(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        guard let list = message.params.first else { return Self.answered([needMoreParams("PART")], scope: scope) }
        var lines: [IRCLine] = []
        for channel in list.split(separator: ",").map(String.init) {
            guard let id = Self.ticket(channel), closeChannel(id) else {
                lines.append(numeric("442", [channel], "You're not on that channel"))
                continue
            }
            if scope.role.isStaff { _ = services.hub.setJoined(session.id, id, false) }
            state.value.parted.insert(id)
            lines.append(IRCLine(source: selfSource, "PART", [channel], trailing: message.params.dropFirst().first))
        }
        return Self.answered(lines, scope: scope)
    }

    private func partAll(scope: SessionScope) -> PreparedLine {
        let channels = (state.value.registered?.channels ?? []).sorted { $0.number < $1.number }
        var lines: [IRCLine] = []
        for id in channels {
            closeChannel(id)
            if scope.role.isStaff { _ = services.hub.setJoined(session.id, id, false) }
            state.value.parted.insert(id)
            lines.append(IRCLine(source: selfSource, "PART", [Self.channel(id)]))
        }
        return Self.answered(lines, scope: scope)
    }

    func privmsg(_ message: ClientMessage, notice: Bool, scope: SessionScope) -> PreparedLine {
        let verb = notice ? "NOTICE" : "PRIVMSG"
        guard let target = message.params.first else {
            return Self.answered(notice ? [] : [numeric("411", [], "No recipient given (PRIVMSG)")], scope: scope)
        }
        guard var text = message.params.dropFirst().first, !text.isEmpty else {
            return Self.answered(notice ? [] : [numeric("412", [], "No text to send")], scope: scope)
        }
        if target.lowercased() == NickDirectory.service.lowercased() {
            // A notice never gets an automatic reply (RFC 1459), and a CTCP is not a command.
            if notice || text.hasPrefix("\u{1}") { return Self.answered([], scope: scope) }
            return serviceCommand(text, scope: scope)
        }
        let toOps = target.hasPrefix("@")
        let channel = toOps ? String(target.dropFirst()) : target
        guard let id = Self.ticket(channel) else {
            if notice { return Self.answered([], scope: scope) }
            // A channel that is no ticket is no channel; anything else would be a private message.
            return Self.answered([channel.hasPrefix("#") ? noSuchChannel(channel)
                                  : numeric("401", [target], "No such nick/channel (write in a ticket's channel, or to \(NickDirectory.service))")], scope: scope)
        }
        if toOps, !scope.role.isStaff {
            return Self.answered(notice ? [] : [numeric("482", [channel], "Only staff write internal notes")], scope: scope)
        }
        if text.hasPrefix("\u{1}ACTION ") {
            text = "* \(state.value.nick) " + text.dropFirst(8).filter { $0 != "\u{1}" }
        } else if text.hasPrefix("\u{1}") {
            return Self.answered([], scope: scope) // other CTCPs: nothing to store
        }
        // echo-message: the echo is the stored entry's own event, pushed back to this session in
        // the order of every other event (``push(_:rendered:)``); a labelled message's echo
        // carries its label and is the whole labelled response.
        var token: Int?
        let label = state.value.label
        if state.value.caps.contains("echo-message") {
            state.value.echoes += 1
            token = state.value.echoes
            let stored = (try? InputRules.messageText(text)) ?? text
            state.value.pendingEchoes.append(PendingEcho(token: state.value.echoes, ticket: id, note: toOps, notice: notice, text: stored, label: label))
            state.value.labelTaken = true
        }
        return .work(pipelines: true) { [text, token] run in
            do throws(DesklineError) {
                let tickets = self.services.tickets
                _ = toOps
                    ? try await tickets.note(scope, id, text: text, whenQueued: run.whenQueued)
                    : try await tickets.post(scope, id, text: text, whenQueued: run.whenQueued)
                return LineOutcome(lines: [], scope: scope)
            } catch {
                // No echo will come for it.
                if let token { self.state.value.pendingEchoes.removeAll { $0.token == token } }
                var lines = notice ? [] : [self.failure(error, verb: verb, channel: channel).encoded]
                if token != nil, let label { lines = self.labeled(lines, label) }
                return LineOutcome(lines: lines, scope: scope)
            }
        }
    }

    func topic(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        guard let channel = message.params.first else { return Self.answered([needMoreParams("TOPIC")], scope: scope) }
        guard let id = Self.ticket(channel) else { return Self.answered([noSuchChannel(channel)], scope: scope) }
        let setting = message.params.count > 1
        return .work(pipelines: false) { _ in
            do throws(DesklineError) {
                let ticket = try await self.services.tickets.visible(scope, id)
                let lines = setting
                    ? [self.numeric("482", [channel], "The topic is the ticket's subject, status and assignee: change them with /quote STATUS \(channel) <status> or /quote ASSIGN \(channel) me")]
                    : self.topicLines(ticket)
                return LineOutcome(lines: lines.map(\.encoded), scope: scope)
            } catch {
                return LineOutcome(lines: [self.failure(error, verb: "TOPIC", channel: channel).encoded], scope: scope)
            }
        }
    }

    func names(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        guard let channel = message.params.first?.split(separator: ",").first.map(String.init) else {
            return Self.answered([numeric("366", ["*"], "End of /NAMES list.")], scope: scope)
        }
        return withTicket(channel, verb: "NAMES", scope: scope) { ticket in self.namesLines(ticket, scope: scope) }
    }

    func mode(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        guard let target = message.params.first else { return Self.answered([needMoreParams("MODE")], scope: scope) }
        let change = message.params.dropFirst().first
        guard target.hasPrefix("#") else {
            guard target.lowercased() == state.value.nick.lowercased() else {
                return Self.answered([numeric("502", [], "Can't change mode for other users")], scope: scope)
            }
            if let change { return Self.answered([IRCLine(source: selfSource, "MODE", [state.value.nick], trailing: change)], scope: scope) }
            return Self.answered([numeric("221", ["+i"])], scope: scope)
        }
        return withTicket(target, verb: "MODE", scope: scope) { ticket in
            switch change {
            case nil: [self.numeric("324", [target, "+nt"]), self.numeric("329", [target, String(Int(ticket.createdAt.timeIntervalSince1970))])]
            case "b"?, "+b"?: [self.numeric("368", [target], "End of channel ban list")]
            default: [self.numeric("482", [target], "Channel modes are fixed: staff are ops, the customer is not")]
            }
        }
    }

    func who(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        guard let mask = message.params.first else { return Self.answered([numeric("315", ["*"], "End of WHO list")], scope: scope) }
        if mask.hasPrefix("#") {
            return withTicket(mask, verb: "WHO", scope: scope) { (ticket) throws(DesklineError) in
                // (Sessions on every node of a shared store.)
                let present = try await self.services.hub.presence(in: scope.tenantId)
                return self.members(of: ticket, scope: scope).map {
                    // H: connected; G ("gone"): not connected now.
                    let here = (present[$0.user]?.sessions ?? 0) > 0 ? "H" : "G"
                    return self.numeric("352", [mask, $0.user.rawValue, scope.tenantId.rawValue, Self.serverName, $0.nick, here + ($0.op ? "@" : "")],
                                        "0 \($0.nick)")
                } + [self.numeric("315", [mask], "End of WHO list")]
            }
        }
        var lines: [IRCLine] = []
        if let user = visibleUser(mask, scope: scope) {
            lines.append(numeric("352", ["*", user.rawValue, scope.tenantId.rawValue, Self.serverName, mask, "H"], "0 \(mask)"))
        }
        return Self.answered(lines + [numeric("315", [mask], "End of WHO list")], scope: scope)
    }

    func whois(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        guard let nick = message.params.last else { return Self.answered([numeric("431", [], "No nickname given")], scope: scope) }
        if nick.lowercased() == NickDirectory.service.lowercased() {
            return Self.answered([numeric("311", [NickDirectory.service, "service", Self.serverName, "*"], "The helpdesk: /msg \(NickDirectory.service) HELP"),
                                  numeric("312", [NickDirectory.service, Self.serverName], "Deskline"),
                                  numeric("318", [NickDirectory.service], "End of /WHOIS list.")], scope: scope)
        }
        guard let user = visibleUser(nick, scope: scope) else {
            return Self.answered([numeric("401", [nick], "No such nick/channel"), numeric("318", [nick], "End of /WHOIS list.")], scope: scope)
        }
        return .work(pipelines: false) { _ in
            let present: UserPresence?
            do throws(DesklineError) {
                present = try await self.services.hub.presence(in: scope.tenantId)[user]
            } catch {
                return LineOutcome(lines: [self.failure(error, verb: "WHOIS", channel: nil).encoded], scope: scope)
            }
            guard let present, present.sessions > 0 else {
                return LineOutcome(lines: [self.numeric("401", [nick], "No such nick/channel (not online)"),
                                           self.numeric("318", [nick], "End of /WHOIS list.")].map(\.encoded), scope: scope)
            }
            var lines = [self.numeric("311", [nick, user.rawValue, scope.tenantId.rawValue, "*"], nick),
                         self.numeric("312", [nick, Self.serverName], "Deskline")]
            if let away = present.away { lines.append(self.numeric("301", [nick], away)) }
            return LineOutcome(lines: (lines + [self.numeric("318", [nick], "End of /WHOIS list.")]).map(\.encoded), scope: scope)
        }
    }

    /// The user behind a nick, if this session may know of them: staff see everyone of their
    /// helpdesk; a customer sees staff and themselves, never another customer.
    private func visibleUser(_ nick: String, scope: SessionScope) -> UserID? {
        guard let user = services.nicks.user(withNick: nick, in: scope.tenantId) else { return nil }
        if scope.role.isStaff || user == scope.userId { return user }
        return services.nicks.isStaff(user, in: scope.tenantId) ? user : nil
    }

    func list(scope: SessionScope) -> PreparedLine {
        .work(pipelines: false) { _ in
            do throws(DesklineError) {
                let tickets = scope.role.isStaff
                    ? try await self.services.tickets.queue(scope, nil)
                    : try await self.services.tickets.list(scope, status: nil)
                let lines = [self.numeric("321", ["Channel"], "Users  Name")]
                    + tickets.map { self.numeric("322", [Self.channel($0.id), String(self.members(of: $0, scope: scope).count)], Self.topic($0)) }
                    + [self.numeric("323", [], "End of /LIST")]
                return LineOutcome(lines: lines.map(\.encoded), scope: scope)
            } catch {
                return LineOutcome(lines: [self.failure(error, verb: "LIST", channel: nil).encoded], scope: scope)
            }
        }
    }

    func away(_ message: ClientMessage, scope: SessionScope) -> PreparedLine {
        let reason = message.params.first.flatMap { $0.isEmpty ? nil : $0 }
        let answer = reason == nil ? numeric("305", [], "You are no longer marked as being away")
                                   : numeric("306", [], "You have been marked as being away")
        guard scope.role.isStaff else { return Self.answered([answer], scope: scope) }
        let checked = reason.map { (try? InputRules.messageText($0, field: "reason")) ?? "away" }
        return .work(pipelines: false) { _ in
            do throws(DesklineError) {
                // (On every node of a shared store.)
                try await self.services.hub.setAway(scope, checked)
                return LineOutcome(lines: [answer.encoded], scope: scope)
            } catch {
                return LineOutcome(lines: [self.failure(error, verb: "AWAY", channel: nil).encoded], scope: scope)
            }
        }
    }

    /// Runs `body` with a ticket the session may see, or answers 403.
    private func withTicket(_ channel: String, verb: String, scope: SessionScope,
                            _ body: @escaping @Sendable (Ticket) async throws(DesklineError) -> [IRCLine]) -> PreparedLine {
        guard let id = Self.ticket(channel) else { return Self.answered([noSuchChannel(channel)], scope: scope) }
        return .work(pipelines: false) { _ in
            do throws(DesklineError) {
                try? await self.loadNicks(scope.tenantId)
                let ticket = try await self.services.tickets.visible(scope, id)
                return LineOutcome(lines: try await body(ticket).map(\.encoded), scope: scope)
            } catch {
                return LineOutcome(lines: [self.failure(error, verb: verb, channel: channel).encoded], scope: scope)
            }
        }
    }
}
