import DesklineCore
import Foundation

// Users' inboxes:
//
//   tenants/<t>/inbox/<u>.jsonl        one notification per line, ids 1, 2, 3, ... (append-only;
//                                      the last line's id is the last one handed out)
//   tenants/<t>/inbox/<u>.read.jsonl   {"readUpTo", "readIds"} after each READ (append-only; the
//                                      last line is what is read now)
//
// Written only by the server, through the tenant's writer.

enum UserCache {
    struct Entry: Sendable {
        var stamp: Int64
        var list: [User]
        var byId: [UserID: User]
        var staff: Staff
        /// Read within 2 s of the directory's mtime: a change right after the reading may have
        /// left the same mtime, so a matching mtime does not prove it current. It is used for
        /// ``UserCache/recheckAfter`` and then read again.
        var racy: Bool
        /// When the directory's mtime last matched `stamp`.
        var checkedAt = ContinuousClock.now
    }

    /// How long a checked list is used without looking at the directory again: changes by
    /// another process (the admin CLI) reach a running server within this time; the server's
    /// own changes drop the list at once.
    static let recheckAfter: Duration = .seconds(1)

    /// The readings of users directories under way, per tenant, with the users generation each
    /// began at.
    struct Loads {
        var running: [TenantID: (generation: Int, id: Int, task: Task<Entry, any Error>)] = [:]
        var nextId = 0
    }
}

struct InboxReadState: Codable {
    var readUpTo = 0
    var readIds: [Int] = []
}

extension FileStore {
    func inboxDir(_ t: TenantID) -> String { tenantDir(t) + "/inbox" }
    func inboxLog(_ u: UserID, _ t: TenantID) -> String { inboxDir(t) + "/\(u.rawValue).jsonl" }
    func inboxReadLog(_ u: UserID, _ t: TenantID) -> String { inboxDir(t) + "/\(u.rawValue).read.jsonl" }

    public func users(in tenant: TenantID) async throws(DesklineError) -> [User] {
        if let recent = recentUsers(tenant) { return recent.list }
        return try await loadUsers(tenant).list
    }

    public func staff(in tenant: TenantID) async throws(DesklineError) -> Staff {
        if let recent = recentUsers(tenant) { return recent.staff }
        return try await loadUsers(tenant).staff
    }

    /// ``cachedUsers(_:)`` on the I/O threads, one reading per tenant at a time: a caller that
    /// misses the kept list while it is being read waits for that reading instead of reading
    /// the directory too. (The first messages after a start all miss it at once: a probe of
    /// 1,000 messages/s read a 111-user directory 16 times in its first second, issue #20.) A
    /// reading that began before a change of users is not joined: the caller reads anew.
    func loadUsers(_ tenant: TenantID) async throws(DesklineError) -> UserCache.Entry {
        let task = userLoads.withLock { loads -> Task<UserCache.Entry, any Error> in
            let generation = usersGeneration.load(ordering: .relaxed)
            if let running = loads.running[tenant], running.generation == generation { return running.task }
            loads.nextId += 1
            let id = loads.nextId
            let task = Task { () throws -> UserCache.Entry in
                defer {
                    self.userLoads.withLock { loads in
                        if loads.running[tenant]?.id == id { loads.running[tenant] = nil }
                    }
                }
                return try await self.io { try self.cachedUsers(tenant) }
            }
            loads.running[tenant] = (generation, id, task)
            return task
        }
        do {
            return try await task.value
        } catch let error as DesklineError {
            throw error
        } catch {
            throw .storage("the store could not complete the operation; nothing was changed")
        }
    }

    /// The kept user list if it was checked within ``UserCache/recheckAfter``: no file access,
    /// so no trip to the I/O threads (every ticket event asks).
    func recentUsers(_ tenant: TenantID) -> UserCache.Entry? {
        userCache.withLock { cache in
            guard let entry = cache[tenant], ContinuousClock.now - entry.checkedAt < UserCache.recheckAfter else { return nil }
            return entry
        }
    }

    /// Drops the kept user list after this process changed a user, and keeps a reading that was
    /// under way meanwhile from being kept.
    func usersChanged(_ tenant: TenantID) {
        userCache.withLock { cache in
            usersGeneration.add(1, ordering: .relaxed)
            cache.removeValue(forKey: tenant)
        }
    }

    /// Drops every tenant's kept user list (after an interrupted account change was undone).
    func allUsersChanged() {
        userCache.withLock { cache in
            usersGeneration.add(1, ordering: .relaxed)
            cache.removeAll()
        }
    }

    /// The tenant's users, as a list and by id. Every ticket event asks for them (who is an agent,
    /// an admin, who wrote), so they are kept while the users directory is unchanged. Any change
    /// to a user (the admin CLI's included) renames a file into the directory and so changes its
    /// mtime. A matching mtime proves a reading current only if it was taken more than 2 s after
    /// that mtime: two changes within one tick of the file system's clock can share an mtime (the
    /// "racy timestamp" rule). A reading taken sooner is still kept, for
    /// ``UserCache/recheckAfter`` only: so right after a change (a sign-up, a new password) the
    /// directory is read once a second, not for every event.
    func cachedUsers(_ tenant: TenantID) throws -> UserCache.Entry {
        // The rule needs the time of the stat, before the files are read.
        let generation = userCache.withLock { _ in usersGeneration.load(ordering: .relaxed) }
        let statTime = Date().timeIntervalSince1970 * 1e9
        let (stamp, cached) = freshUserCache(tenant)
        if let cached { return cached }
        let dir = tenantDir(tenant) + "/users"
        userListReads.add(1, ordering: .relaxed)
        let list = try DurableFile.list(dir).sorted().compactMap { name -> User? in
            guard name.hasSuffix(".json"), let id = UserID(rawValue: String(name.dropLast(5))) else { return nil }
            return try load(User.self, userFile(id, tenant))
        }
        let racy = stamp.map { statTime - Double($0) <= 2e9 } ?? true
        let entry = UserCache.Entry(stamp: stamp ?? 0, list: list, byId: Dictionary(list.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }),
                                    staff: Staff(list), racy: racy)
        if stamp != nil {
            userCache.withLock { cache in
                if usersGeneration.load(ordering: .relaxed) == generation { cache[tenant] = entry }
            }
        }
        return entry
    }

    /// The kept user list if the users directory has not changed since it was read (and the
    /// reading was not racy), and the directory's mtime.
    func freshUserCache(_ tenant: TenantID) -> (stamp: Int64?, entry: UserCache.Entry?) {
        var info = stat()
        guard stat(tenantDir(tenant) + "/users", &info) == 0 else { return (nil, nil) }
        let stamp = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        let checked = ContinuousClock.now
        let cached = userCache.withLock { cache -> UserCache.Entry? in
            guard let entry = cache[tenant], entry.stamp == stamp, !entry.racy else { return nil }
            cache[tenant]?.checkedAt = checked
            return entry
        }
        return (stamp, cached)
    }

    /// A notification's line for one user's inbox, numbered, not yet written.
    struct InboxLine {
        var user: UserID
        var path: String
        var id: Int
        var line: Data
    }

    /// Works out `notification`'s line for each user's inbox, numbered per user, without writing
    /// anything: a job does this before its first append, so that trouble here refuses the job
    /// alone. A user whose inbox cannot be read (a damaged last line) is left out and logged:
    /// one damaged inbox does not stop the change the notification is about, nor anyone else's.
    func inboxLines(_ notification: DesklineCore.Notification, for users: [UserID], in tenant: TenantID,
                    _ memory: TenantMemory) throws -> [InboxLine] {
        guard !users.isEmpty else { return [] }
        var stamped = notification
        stamped.at = Self.storedPrecision(notification.at)
        // (An inbox the writer remembers is there, and so is its directory.)
        if users.contains(where: { memory.inboxes[$0] == nil }) { try DurableFile.makeDirectories(inboxDir(tenant)) }
        return users.compactMap { user in
            let path = inboxLog(user, tenant)
            var item = stamped
            do {
                let last = try memory.inboxes[user] ?? lastLine(DesklineCore.Notification.self, path, uncommitted: true)?.id ?? 0
                item.id = last + 1
            } catch {
                logger.error("an inbox could not be read; the notification was not stored in it",
                             metadata: ["tenant": "\(tenant)", "user": "\(user)", "error": "\(error)"])
                return nil
            }
            return InboxLine(user: user, path: path, id: item.id, line: JSONLine.line(item))
        }
    }

    /// Appends lines made by ``inboxLines(_:for:in:_:)`` in `batch`.
    func append(_ lines: [InboxLine], _ batch: WriteBatch, _ memory: inout TenantMemory) throws {
        for line in lines {
            try batch.append(line.line, to: line.path)
            memory.remember(inbox: line.user, lastId: line.id)
        }
    }

    /// The last id handed out and what is read, as committed.
    private func inboxState(of user: UserID, in tenant: TenantID, uncommitted: Bool = false) throws -> (lastId: Int, read: InboxReadState) {
        let lastId = try lastLine(DesklineCore.Notification.self, inboxLog(user, tenant), uncommitted: uncommitted)?.id ?? 0
        let read = try lastLine(InboxReadState.self, inboxReadLog(user, tenant), uncommitted: uncommitted) ?? InboxReadState()
        return (lastId, read)
    }

    public func unreadNotificationCount(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Int {
        try await io {
            let state = try self.inboxState(of: user, in: tenant)
            return Inbox(items: [], readUpTo: state.read.readUpTo, readIds: Set(state.read.readIds), lastId: state.lastId).unreadCount
        }
    }

    public func inbox(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Inbox {
        try await io {
            let read = try self.lastLine(InboxReadState.self, self.inboxReadLog(user, tenant)) ?? InboxReadState()
            let items = try self.readLines(DesklineCore.Notification.self, self.inboxLog(user, tenant))
            return Inbox(items: items, readUpTo: read.readUpTo, readIds: Set(read.readIds), lastId: items.last?.id ?? 0)
        }
    }

    public func markNotificationsRead(_ id: Int?, of user: UserID, in tenant: TenantID) async throws(DesklineError) {
        try await writer(tenant).write { batch, _ in
            let (lastId, before) = try self.inboxState(of: user, in: tenant, uncommitted: true)
            var state = before
            if let id {
                guard (1...max(1, lastId)).contains(id), id <= lastId else {
                    throw DesklineError.notFound("You have no notification \(id).")
                }
                var read = Set(state.readIds)
                if id > state.readUpTo { read.insert(id) }
                while read.remove(state.readUpTo + 1) != nil { state.readUpTo += 1 }
                state.readIds = read.sorted()
            } else {
                state.readUpTo = lastId
                state.readIds = []
            }
            guard state.readUpTo != before.readUpTo || state.readIds != before.readIds else { return }
            try DurableFile.makeDirectories(self.inboxDir(tenant))
            try batch.append(Self.line(state), to: self.inboxReadLog(user, tenant))
        }
    }
}
