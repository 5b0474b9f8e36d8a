import DesklineCore
import DesklineProtocol
import NIOCore

// What IRC has no verb for runs through the native command table: written to the service user
// (`/msg Deskline QUEUE`) or sent raw (`/quote QUEUE`); the reply comes back as notices from
// the service. And the pushed events, as an IRC client shows them well.

extension IRCConnection {
    /// Runs `text` as a native command line and answers with notices from the service. `raw`:
    /// the command was sent raw as an IRC verb, so an unknown one is `421`.
    func serviceCommand(_ text: String, scope: SessionScope, raw verb: String? = nil) -> PreparedLine {
        // echo-message: what the user wrote to the service is echoed like any message.
        let echo = verb == nil && state.value.caps.contains("echo-message")
            ? [IRCLine(source: selfSource, "PRIVMSG", [NickDirectory.service], trailing: text)] : []
        switch session.prepare(.line(ByteBuffer(string: text)), scope: scope) {
        case .answered(let outcome):
            return Self.answered(echo + serviceReply(outcome.lines, raw: verb), scope: scope, quit: outcome.quit)
        case .command(let command, let message, let arguments):
            let session = self.session
            return .work(pipelines: false) { run in
                // The echo goes out before anything the command causes (nothing else of this
                // session is in flight: the command does not pipeline).
                if !echo.isEmpty, run.outbox.write(echo[0].encoded) { run.outbox.flush() }
                let outcome = await session.run(command, message, arguments, scope: run.scope, outbox: run.outbox)
                var lines = self.serviceReply(outcome.lines, raw: verb)
                // A ticket opened here is a channel at once (its own event does not come back).
                if command.name == "NEW", let ok = outcome.lines.last, ok.kind == .ok,
                   let id = ok.params.first.flatMap(TicketID.init(parsing:)),
                   let ticket = try? await self.services.tickets.visible(scope, id),
                   self.openChannel(ticket) {
                    lines += self.joinBurst(ticket)
                }
                return LineOutcome(lines: lines.map(\.encoded), scope: scope, quit: outcome.quit)
            }
        }
    }

    /// Native reply lines as readable notices.
    func serviceReply(_ lines: [ServerLine], raw verb: String?) -> [IRCLine] {
        if let verb, let last = lines.last, last.kind == .err, last.params.first == "UNKNOWN_COMMAND" {
            return [numeric("421", [String(verb.prefix(32))], "Unknown command (/msg \(NickDirectory.service) HELP lists the helpdesk's commands)")]
        }
        return lines.map { line in
            let words = line.params.map { TagValue.unescape(Substring($0)) }
            let text: String = switch line.kind {
            case .err: "\(words.first ?? "ERROR"): \(line.text ?? "")"
            case .ok: line.text.flatMap { $0.isEmpty ? nil : $0 } ?? ([line.command] + words).joined(separator: " ")
            case .rpl, .event: (words.joined(separator: " ") + (line.text.map { $0.isEmpty ? "" : ": " + $0 } ?? ""))
            }
            return serviceNotice(text)
        }
    }

    // MARK: Events

    /// This session's own event, pushed back because it asked for echo-message: the entry as the
    /// others see it (a labelled message's echo with its label), a status change with its topic.
    func echo(_ event: TicketEvent) -> [IRCLine] {
        guard event.kind == .entry, let t = event.ticket, let e = event.entry else { return [] }
        var line = entryLine(e, in: t.id, tenant: event.tenantId)
        guard let i = state.value.pendingEchoes.firstIndex(where: { $0.ticket == t.id && $0.note == (e.kind == .note) && $0.text == e.text }) else {
            return [line] // written elsewhere (another connection of this session? never) or by a raw MSG/NOTE
        }
        let pending = state.value.pendingEchoes.remove(at: i)
        if pending.notice { line.command = "NOTICE" }
        guard let label = pending.label else { return [line] }
        // The labelled response: one line, or a long message's lines in a labelled batch.
        let parts = line.split()
        if parts.count > 1, state.value.caps.contains("batch") {
            return inBatch("labeled-response", [], parts).enumerated().map { index, part in
                var part = part
                if index == 0 { part.tags.insert((key: "label", value: label), at: 0) }
                return part
            }
        }
        line.tags.insert((key: "label", value: label), at: 0)
        return [line]
    }

    /// The channel lines of one event already rendered on this loop, by capability variant.
    struct RenderedLines {
        var byVariant: [Int: ByteBuffer] = [:]
    }

    /// On the event loop: shows one event the hub found this session is meant to see.
    func push(_ event: TicketEvent, rendered: inout RenderedLines) {
        guard let registered = state.value.registered, !held(.event(event), registered.outbox) else { return }
        // The common case: someone else's message or note in a channel this session has open.
        if let t = event.ticket, let e = event.entry, e.kind != .status, registered.channels.contains(t.id),
           event.originSession != registered.scope.sessionId {
            let caps = state.value.caps
            let variant = (caps.contains("server-time") ? 1 : 0) | (caps.contains("message-tags") ? 2 : 0)
            let buffer: ByteBuffer
            if let done = rendered.byVariant[variant] {
                buffer = done
            } else {
                buffer = entryLine(e, in: t.id, tenant: event.tenantId).encoded
                rendered.byVariant[variant] = buffer
            }
            if registered.outbox.write(buffer) { registered.outbox.flush() }
            return
        }
        Self.write(render(event), to: registered.outbox)
    }

    /// While pushes are held (see ``releasePushes(replayed:)``): keeps `item` for later and
    /// returns true. Held for a reply the client does not read, past the send queue's bound, the
    /// session goes, as it would for the lines themselves.
    func held(_ item: Held, _ outbox: Outbox) -> Bool {
        guard state.value.holdingPushes > 0 else { return false }
        guard state.value.heldEvents.count < session.limits.sendQueueLines else {
            session.logger.notice("IRC session dropped: events held for a reply it does not read", metadata: ["session": "\(session.id)"])
            outbox.abort()
            return true
        }
        state.value.heldEvents.append(item)
        return true
    }

    /// On the event loop: writes pushed lines and flushes them once (nothing once the outbox
    /// refuses a line: the client was cut off).
    static func write(_ lines: [IRCLine], to outbox: Outbox) {
        guard !lines.isEmpty else { return }
        for line in lines {
            guard outbox.write(line.encoded) else { break }
        }
        outbox.flush()
    }

    /// The lines of one event for this session: a ticket's entry in its channel (joining it
    /// first if it is the session's own ticket or one it follows), anything else as a notice
    /// from the service.
    func render(_ event: TicketEvent) -> [IRCLine] {
        guard let r = state.value.registered else { return [] }
        let me = r.scope.userId
        if event.originSession == r.scope.sessionId, event.entry?.kind != .status {
            return echo(event)
        }
        switch event.kind {
        case .entry:
            guard let t = event.ticket, let e = event.entry else { return [] }
            var lines: [IRCLine] = []
            if !r.channels.contains(t.id) {
                let own = me == event.customerUserId || me == t.assigneeId || services.hub.isJoined(session.id, t.id)
                guard own, !state.value.parted.contains(t.id) else {
                    if e.kind == .status {
                        return [serviceNotice("\(t.id) (\(t.subject)): \(entryLine(e, in: t.id, tenant: event.tenantId, now: t).trailing ?? e.text)")]
                    }
                    let what = e.kind == .note ? "note" : "message"
                    return [serviceNotice("\(t.id) (\(t.subject)): \(what) from \(e.authorName): \(e.text) — /join \(t.id) to answer")]
                }
                openChannel(t)
                if r.scope.role.isStaff { _ = services.hub.setJoined(session.id, t.id, true) }
                lines += joinBurst(t)
            }
            lines.append(entryLine(e, in: t.id, tenant: event.tenantId, now: t))
            if e.kind == .status {
                lines.append(IRCLine(source: Self.serviceSource, "TOPIC", [Self.channel(t.id)], trailing: Self.topic(t)))
                lines += assigneeChange(t)
            }
            return lines
        case .created:
            guard let t = event.ticket else { return [] }
            if me == event.customerUserId {
                guard !state.value.parted.contains(t.id), openChannel(t) else { return [] }
                return joinBurst(t)
            }
            return [serviceNotice("New ticket \(t.id) from \(event.actor.name): \(t.subject) — /join \(t.id)")]
        case .call:
            guard let c = event.call else { return [] }
            let about = c.ticketId.map { " about \($0)" } ?? ""
            let text = switch c.status {
            case .requested: "Call \(c.id) requested by \(event.actor.name)\(about): phone \(c.phone)\(c.note.map { " — \($0)" } ?? "") (/quote CALL ACCEPT \(c.id))"
            case .accepted: "Call \(c.id)\(about) accepted by \(c.agentName ?? event.actor.name): they will phone \(c.phone)"
            case .done: "Call \(c.id)\(about) done\(c.outcome.map { ": \($0)" } ?? "")"
            }
            return [serviceNotice(text)]
        }
    }
}
