import DesklineCore
import Foundation

// Users' inboxes:
//
//   tenants/<t>/inbox/<u>.jsonl        one notification per line (append + fsync)
//   tenants/<t>/inbox/<u>.state.json   {"lastId", "readUpTo", "readIds"} (atomic replace)
//
// Written only by the server, under the tenant's lock.

struct InboxState: Codable {
    var lastId = 0
    var readUpTo = 0
    var readIds: [Int] = []
}

extension FileStore {
    func inboxDir(_ t: TenantID) -> String { tenantDir(t) + "/inbox" }
    func inboxLog(_ u: UserID, _ t: TenantID) -> String { inboxDir(t) + "/\(u.rawValue).jsonl" }
    func inboxStateFile(_ u: UserID, _ t: TenantID) -> String { inboxDir(t) + "/\(u.rawValue).state.json" }

    public func users(in tenant: TenantID) async throws(DesklineError) -> [User] {
        try await io {
            try DurableFile.list(self.tenantDir(tenant) + "/users").sorted().compactMap { name in
                guard name.hasSuffix(".json"), let id = UserID(rawValue: String(name.dropLast(5))) else { return nil }
                return try self.load(User.self, self.userFile(id, tenant))
            }
        }
    }

    public func appendNotification(_ notification: DesklineCore.Notification, for users: [UserID], in tenant: TenantID) async throws(DesklineError) {
        var template = notification
        template.at = Self.storedPrecision(notification.at)
        let stamped = template
        try await io {
            try self.withTenantLock(tenant) {
                try DurableFile.makeDirectories(self.inboxDir(tenant))
                for user in users {
                    var state = try self.load(InboxState.self, self.inboxStateFile(user, tenant)) ?? InboxState()
                    state.lastId += 1
                    // State first: after a crash in between an id is skipped, never reused.
                    try self.save(state, self.inboxStateFile(user, tenant))
                    var item = stamped
                    item.id = state.lastId
                    try self.appendLine(item, self.inboxLog(user, tenant))
                }
            }
        }
    }

    public func unreadNotificationCount(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Int {
        try await io {
            let state = try self.load(InboxState.self, self.inboxStateFile(user, tenant)) ?? InboxState()
            return Inbox(items: [], readUpTo: state.readUpTo, readIds: Set(state.readIds), lastId: state.lastId).unreadCount
        }
    }

    public func inbox(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Inbox {
        try await io {
            let state = try self.load(InboxState.self, self.inboxStateFile(user, tenant)) ?? InboxState()
            let items = try self.readLines(DesklineCore.Notification.self, self.inboxLog(user, tenant))
            return Inbox(items: items, readUpTo: state.readUpTo, readIds: Set(state.readIds), lastId: state.lastId)
        }
    }

    public func markNotificationsRead(_ id: Int?, of user: UserID, in tenant: TenantID) async throws(DesklineError) {
        try await io {
            try self.withTenantLock(tenant) {
                var state = try self.load(InboxState.self, self.inboxStateFile(user, tenant)) ?? InboxState()
                if let id {
                    guard (1...max(1, state.lastId)).contains(id), id <= state.lastId else {
                        throw DesklineError.notFound("You have no notification \(id).")
                    }
                    var read = Set(state.readIds)
                    if id > state.readUpTo { read.insert(id) }
                    while read.remove(state.readUpTo + 1) != nil { state.readUpTo += 1 }
                    state.readIds = read.sorted()
                } else {
                    state.readUpTo = state.lastId
                    state.readIds = []
                }
                try self.save(state, self.inboxStateFile(user, tenant))
            }
        }
    }
}
