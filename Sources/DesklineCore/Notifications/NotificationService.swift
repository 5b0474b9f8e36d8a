import struct Foundation.Date

/// Users' inboxes: every notification the rules send someone is kept until they read it, so
/// nothing is missed while offline.
public struct NotificationService: Sendable {
    let store: any Store

    public init(store: any Store) {
        self.store = store
    }

    /// The notification for `event`; the store numbers it per recipient (`id` here is 0).
    public static func draft(for event: TicketEvent) -> Notification {
        switch event.kind {
        case .created:
            return Notification(id: 0, type: "new", ticket: event.ticket?.id, call: nil, actorName: event.actor.name,
                                     text: event.ticket?.subject ?? "", at: event.at)
        case .call:
            let call = event.call
            let text: String
            switch call?.status {
            case .accepted?: text = "\(call?.agentName ?? "An agent") will phone you at \(call?.phone ?? "")"
            case .done?: text = "call done" + (call?.outcome.map { ": \($0)" } ?? "")
            default: text = "call \(call?.phone ?? "")" + (call?.note.map { ": \($0)" } ?? "")
            }
            return Notification(id: 0, type: "call", ticket: call?.ticketId, call: call?.id, actorName: event.actor.name,
                                     text: text, at: event.at)
        case .entry:
            return Notification(id: 0, type: event.entry?.kind.rawValue ?? "message", ticket: event.ticket?.id, call: nil,
                                     actorName: event.actor.name, text: event.entry?.text ?? "", at: event.at)
        }
    }

    /// The caller's notifications, oldest first: unread ones, or all with `all`.
    public func list(_ scope: SessionScope, all: Bool) async throws(DesklineError) -> [(Notification, read: Bool)] {
        let inbox = try await store.inbox(of: scope.userId, in: scope.tenantId)
        return inbox.items.map { ($0, inbox.isRead($0.id)) }.filter { all || !$0.1 }
    }

    public func unreadCount(_ scope: SessionScope) async throws(DesklineError) -> Int {
        try await store.unreadNotificationCount(of: scope.userId, in: scope.tenantId)
    }

    /// Marks one notification (or all, with nil) read. Unknown ids are `NOT_FOUND`.
    public func markRead(_ scope: SessionScope, id: Int?) async throws(DesklineError) {
        try await store.markNotificationsRead(id, of: scope.userId, in: scope.tenantId)
    }
}

/// A user's inbox: the notifications and which of them are read.
public struct Inbox: Sendable, Equatable {
    public var items: [Notification]
    /// Every id up to this one is read ...
    public var readUpTo: Int
    /// ... and these above it.
    public var readIds: Set<Int>
    public var lastId: Int

    public init(items: [Notification], readUpTo: Int, readIds: Set<Int>, lastId: Int) {
        self.items = items
        self.readUpTo = readUpTo
        self.readIds = readIds
        self.lastId = lastId
    }

    public func isRead(_ id: Int) -> Bool { id <= readUpTo || readIds.contains(id) }
    public var unreadCount: Int { max(0, lastId - readUpTo - readIds.count) }
}
