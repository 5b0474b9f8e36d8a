import DesklineCore
import DesklineProtocol
import Synchronization

/// The logged-in sessions, and the push side of the gateway: it receives every stored
/// ``TicketEvent`` and hands its line to each session allowed and meant to see it.
///
/// Delivery never waits: a line is put on each session's bounded ``Outbox`` (a client that lets
/// it overflow is disconnected) and the lock is never held while anything is written to a socket.
public final class SessionHub: EventSink, Sendable {
    struct Member: Sendable {
        var scope: SessionScope
        var outbox: Outbox
        /// Tickets this (staff) session has JOINed.
        var joined: Set<TicketID> = []
    }

    private let members = Mutex<[Int: Member]>([:])
    /// Away messages of staff users, by tenant and user; cleared by BACK or when the user's last
    /// session ends.
    private let away = Mutex<[TenantID: [UserID: String]]>([:])

    public init() {}

    func attach(_ session: Int, scope: SessionScope, outbox: Outbox) {
        members.withLock { $0[session] = Member(scope: scope, outbox: outbox) }
    }

    func detach(_ session: Int) {
        let gone = members.withLock { m -> SessionScope? in
            guard let scope = m.removeValue(forKey: session)?.scope else { return nil }
            return m.values.contains { $0.scope.tenantId == scope.tenantId && $0.scope.userId == scope.userId } ? nil : scope
        }
        if let gone { setAway(gone, nil) }
    }

    /// Sets (or with nil clears) a user's away message.
    func setAway(_ scope: SessionScope, _ reason: String?) {
        away.withLock { $0[scope.tenantId, default: [:]][scope.userId] = reason }
    }

    func awayMessages(in tenant: TenantID) -> [UserID: String] {
        away.withLock { $0[tenant] ?? [:] }
    }

    /// Adds (true) or removes (false) a ticket from a session's channels; returns whether that
    /// changed anything.
    func setJoined(_ session: Int, _ ticket: TicketID, _ joined: Bool) -> Bool {
        members.withLock { m in
            guard m[session] != nil else { return false }
            return joined ? m[session]!.joined.insert(ticket).inserted : m[session]!.joined.remove(ticket) != nil
        }
    }

    /// Logged-in sessions of a tenant's users: user → number of sessions.
    func online(in tenant: TenantID) -> [UserID: Int] {
        members.withLock { m in
            m.values.filter { $0.scope.tenantId == tenant }.reduce(into: [:]) { $0[$1.scope.userId, default: 0] += 1 }
        }
    }

    public func publish(_ event: TicketEvent) async {
        guard let line = Self.line(for: event) else { return }
        let targets = members.withLock { m in
            m.filter { id, member in id != event.originSession && Self.isAudience(member, of: event) }.map(\.value.outbox)
        }
        for outbox in targets { outbox.send(line) }
    }

    /// Who gets an event live: the users it notifies, the ticket's customer, its assignee
    /// (implicitly joined) and every session that JOINed the ticket — always within what the
    /// session may see at all (never another tenant, never a note to a customer, never another
    /// customer's ticket).
    static func isAudience(_ member: Member, of event: TicketEvent) -> Bool {
        guard event.mayReach(member.scope) else { return false }
        let user = member.scope.userId
        if event.recipients.contains(user) || user == event.customerUserId { return true }
        guard let ticket = event.ticket else { return false }
        return user == ticket.assigneeId || member.joined.contains(ticket.id)
    }

    /// The pushed line of an event (docs/PROTOCOL.md, "Events").
    static func line(for event: TicketEvent) -> ServerLine? {
        switch event.kind {
        case .entry:
            guard let ticket = event.ticket, let entry = event.entry else { break }
            return ServerLine(.event, "TICKET", [ticket.id.description, entry.messageID, Timestamp.format(entry.at),
                                                 entry.kind.rawValue, entry.authorRole.rawValue, entry.authorName],
                              text: entry.text)
        case .created:
            guard let ticket = event.ticket else { break }
            return ServerLine(.event, "NEW", [ticket.id.description, Timestamp.format(ticket.createdAt),
                                              ticket.customerId.rawValue, event.actor.name], text: ticket.subject)
        case .call:
            guard let call = event.call else { break }
            let text = call.status == .requested ? call.note : (call.status == .done ? call.outcome : nil)
            return ServerLine(.event, "CALL", [call.id.description, call.status.rawValue, Timestamp.format(call.updatedAt),
                                               call.ticketId?.description ?? "", event.actor.name, call.phone],
                              text: text ?? "")
        }
        return nil // an event without the record it is about: nothing to show
    }
}
