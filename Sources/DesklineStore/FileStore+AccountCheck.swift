import DesklineCore
import Foundation

/// One tenant's account records and what refers to them, as `deskline check` read them: enough to
/// tell which states an interrupted or refused account change can have left (by the code before
/// account changes were all or nothing), and which of them can be resolved without a person.
struct TenantAccounts {
    var tenant: TenantID
    var users: [UserID: User]
    var customers: [CustomerID: Customer]
    /// Ticket and call numbers by customer (from the logs).
    var tickets: [CustomerID: [Int]]
    var calls: [CustomerID: [Int]]
    /// Users a ticket or call log names (author, assignee, agent).
    var namedUsers: Set<UserID>
    /// Users who have an inbox.
    var inboxes: Set<UserID>
    /// Users by the customer they name, and the users a customer links to.
    let usersByCustomer: [CustomerID: [UserID]]
    let linkedUsers: Set<UserID>

    init(tenant: TenantID, users: [UserID: User], customers: [CustomerID: Customer], tickets: [CustomerID: [Int]],
         calls: [CustomerID: [Int]], namedUsers: Set<UserID>, inboxes: Set<UserID>) {
        self.tenant = tenant
        self.users = users
        self.customers = customers
        self.tickets = tickets
        self.calls = calls
        self.namedUsers = namedUsers
        self.inboxes = inboxes
        usersByCustomer = Dictionary(grouping: users.values.filter { $0.customerId != nil }, by: { $0.customerId! }).mapValues { $0.map(\.id) }
        linkedUsers = Set(customers.values.compactMap(\.userId))
    }

    /// Ids are handed out in order (`c1`, `c2`, ...; `u1`, ...).
    static func number(_ id: String) -> Int { Int(id.dropFirst()) ?? 0 }

    /// Records that share an email, oldest first, by email; only emails with more than one.
    static func sharing<ID: RawRepresentable<String>>(_ emails: [(ID, String)]) -> [(email: String, ids: [ID])] {
        Dictionary(grouping: emails, by: \.1).filter { $0.value.count > 1 }
            .map { ($0.key, $0.value.map(\.0).sorted { number($0.rawValue) < number($1.rawValue) }) }
            .sorted { $0.email < $1.email }
    }

    var customersSharingEmail: [(email: String, ids: [CustomerID])] { Self.sharing(customers.values.map { ($0.id, $0.email) }) }
    var usersSharingEmail: [(email: String, ids: [UserID])] { Self.sharing(users.values.map { ($0.id, $0.email) }) }

    func loginOf(customer id: CustomerID) -> UserID? {
        customers[id]?.userId ?? usersByCustomer[id]?.first
    }

    /// Nothing refers to the customer: no ticket, call or login.
    func isUnused(customer id: CustomerID) -> Bool {
        (tickets[id] ?? []).isEmpty && (calls[id] ?? []).isEmpty && loginOf(customer: id) == nil
    }

    /// Nothing refers to the user: no customer links to it, no ticket or call names it, it has no inbox.
    func isUnused(user id: UserID) -> Bool {
        !linkedUsers.contains(id) && !namedUsers.contains(id) && !inboxes.contains(id)
    }

    /// The records of a group sharing an email that may be removed: all but the newest, if
    /// nothing refers to any of them (else nil, and a person decides). Only the newest can have
    /// been acknowledged: a create looks for the email in its index first and wrote that index
    /// last, so any record with the email that was created later proves that every earlier
    /// create of the email failed before its index was written (or that the index is gone, which
    /// only these failures caused).
    static func removable<ID>(_ ids: [ID], unused: (ID) -> Bool) -> [ID]? {
        let earlier = Array(ids.dropLast())
        return earlier.allSatisfy(unused) ? earlier : nil
    }

    /// Users that `check --repair` removes because a later user has their email.
    var removableSharingUsers: Set<UserID> {
        Set(usersSharingEmail.flatMap { Self.removable($0.ids, unused: isUnused(user:)) ?? [] })
    }

    /// Whether `id` is a customer login whose create stopped between the user file and the
    /// customer's back-link (the code before account changes were all or nothing): the customer
    /// links to no existing user, and no other user (but those removed) names it.
    func isInterruptedLogin(_ id: UserID, sharingRemovable: Set<UserID>) -> Bool {
        guard let user = users[id], user.role == .customer, let cid = user.customerId, let customer = customers[cid],
              customer.userId.map({ users[$0] == nil }) ?? true else { return false }
        return (usersByCustomer[cid] ?? []).allSatisfy { $0 == id || sharingRemovable.contains($0) }
    }

    /// Users that `check --repair` removes (never acknowledged, nothing refers to them): earlier
    /// users sharing an email, and logins whose create was interrupted before the back-link
    /// (linking one back would make a login live whose password nobody was given).
    var removableUsers: Set<UserID> {
        let sharing = removableSharingUsers
        return sharing.union(users.keys.filter {
            !sharing.contains($0) && isUnused(user: $0) && isInterruptedLogin($0, sharingRemovable: sharing)
        })
    }

    func describe(customer id: CustomerID) -> String {
        guard let c = customers[id] else { return "\(tenant)/\(id)" }
        let login = loginOf(customer: id).map { "login \($0)" } ?? "no login"
        return "\(tenant)/\(id) \"\(c.name)\" (\(Self.count((tickets[id] ?? []).count, "ticket")), \(Self.count((calls[id] ?? []).count, "call")), \(login))"
    }

    static func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }

    func describe(user id: UserID) -> String {
        guard let u = users[id] else { return "\(tenant)/\(id)" }
        var uses: [String] = []
        if let c = customers.values.first(where: { $0.userId == id }) { uses.append("login of customer \(c.id)") }
        if namedUsers.contains(id) { uses.append("named in tickets or calls") }
        if inboxes.contains(id) { uses.append("has an inbox") }
        return "\(tenant)/\(id) \"\(u.displayName)\" (\(u.role.rawValue)\(uses.isEmpty ? "" : ", " + uses.joined(separator: ", ")))"
    }
}

extension FileStore {
    /// A problem `deskline check` reports, and how `--repair` resolves it (nil: a person decides).
    struct Finding {
        var text: String
        var fix: (() throws -> Void)?
    }

    /// The customer-email index, duplicate emails and user↔customer links of one tenant. Every
    /// fix is one account change (all or nothing).
    func accountFindings(_ a: TenantAccounts, transaction: AccountTransaction) -> [Finding] {
        let tenant = a.tenant
        var findings: [Finding] = []
        func remove(_ path: String) -> AccountTransaction.Write { AccountTransaction.Write(path: path, data: nil) }
        func indexWrite(_ email: String, _ id: CustomerID) throws -> AccountTransaction.Write {
            try write(CustomerEmail(customerId: id), customerEmailFile(email, tenant))
        }
        func indexed(_ email: String) -> CustomerID? { (try? load(CustomerEmail.self, customerEmailFile(email, tenant)))??.customerId }

        // Customer emails: unique, and the index names the customer.
        let sharing = a.customersSharingEmail
        let shared = Set(sharing.flatMap(\.ids))
        for (id, customer) in a.customers.sorted(by: { TenantAccounts.number($0.key.rawValue) < TenantAccounts.number($1.key.rawValue) })
        where !shared.contains(id) && indexed(customer.email) != id {
            findings.append(Finding(text: "customer-email index of \(tenant)/\(id) is missing or wrong") {
                try transaction.commit([try indexWrite(customer.email, id)])
            })
        }
        for (email, ids) in sharing {
            let newest = ids[ids.count - 1]
            let names = ids.map { "\(tenant)/\($0)" }.joined(separator: ", ")
            if let earlier = TenantAccounts.removable(ids, unused: a.isUnused(customer:)) {
                let list = earlier.map { a.describe(customer: $0) }.joined(separator: ", ")
                findings.append(Finding(text: "customers \(names) share the email \(email): \(list) never had \(earlier.count == 1 ? "its" : "their") create acknowledged (a later customer with the email could be created only because \(earlier.count == 1 ? "it" : "each") failed) and nothing refers to \(earlier.count == 1 ? "it" : "them"); repair removes \(earlier.count == 1 ? "it" : "them") and keeps \(tenant)/\(newest)") {
                    let removals = earlier.flatMap { [remove(self.customerFile($0, tenant)), remove(self.customerTicketsFile($0, tenant)),
                                                      remove(self.customerCallsFile($0, tenant))] }
                    try transaction.commit(removals + [try indexWrite(email, newest)])
                })
            } else {
                let list = ids.map { a.describe(customer: $0) }.joined(separator: "; ")
                findings.append(Finding(text: "customers \(names) share the email \(email), and more than the newest is in use: \(list). A person must decide which record keeps the email (only \(tenant)/\(newest) can have been acknowledged by `customer add`); Deskline has no command that merges or removes customers, so with the server stopped edit or remove the other's files, then run `deskline check --repair`"))
                // Meanwhile the index names one of them, so no further customer gets the email.
                if let current = indexed(email), ids.contains(current) { continue }
                findings.append(Finding(text: "customer-email index of \(email) in \(tenant) names none of \(names)") {
                    try transaction.commit([try indexWrite(email, newest)])
                })
            }
        }

        // Users sharing a login email in the tenant (LOGIN refuses an email with two accounts in a tenant).
        let removableUsers = a.removableSharingUsers
        for (email, ids) in a.usersSharingEmail {
            let names = ids.map { "\(tenant)/\($0)" }.joined(separator: ", ")
            let earlier = ids.dropLast().filter { removableUsers.contains($0) }
            if !earlier.isEmpty {
                let list = earlier.map { a.describe(user: $0) }.joined(separator: ", ")
                findings.append(Finding(text: "users \(names) share the login email \(email): \(list) never had \(earlier.count == 1 ? "its" : "their") create acknowledged and nothing refers to \(earlier.count == 1 ? "it" : "them"); repair removes \(earlier.count == 1 ? "it" : "them") and keeps \(tenant)/\(ids[ids.count - 1])") {
                    try transaction.commit(earlier.map { remove(self.userFile($0, tenant)) })
                })
            } else {
                let list = ids.map { a.describe(user: $0) }.joined(separator: "; ")
                findings.append(Finding(text: "users \(names) share the login email \(email), and more than the newest is in use: \(list). LOGIN refuses that email in \(tenant) until a person decides which account to keep (only \(tenant)/\(ids[ids.count - 1]) can have been acknowledged by `user add`); with the server stopped remove the other's user file, then run `deskline check --repair`"))
            }
        }

        // User ↔ customer links.
        for (id, user) in a.users.sorted(by: { TenantAccounts.number($0.key.rawValue) < TenantAccounts.number($1.key.rawValue) })
        where !removableUsers.contains(id) {
            guard let cid = user.customerId, a.customers[cid]?.userId != id else { continue }
            let text = "user \(tenant)/\(id) names customer \(cid), which does not link back"
            // The customer links to no existing user, and this user alone names it: the create
            // of this login stopped between the user and the back-link, so it was never
            // acknowledged. Unused, it goes (nobody was given its password); in use, it is
            // completed, which is what the login index rebuilt from the users already does.
            if a.isInterruptedLogin(id, sharingRemovable: removableUsers), a.isUnused(user: id) {
                findings.append(Finding(text: text + " (a login whose create was interrupted, never acknowledged, and nothing refers to it); repair removes it") {
                    try transaction.commit([remove(self.userFile(id, tenant))])
                })
            } else if a.isInterruptedLogin(id, sharingRemovable: removableUsers), var customer = a.customers[cid] {
                findings.append(Finding(text: text + " (a login whose create was interrupted, since put to use); repair links it back") {
                    customer.userId = id
                    try transaction.commit([try self.write(customer, self.customerFile(cid, tenant))])
                })
            } else {
                let customer = a.customers[cid] == nil ? "there is no customer \(cid)" : "customer \(cid) links to \(a.customers[cid]?.userId.map { "user \($0)" } ?? "no user")"
                findings.append(Finding(text: text + " (\(customer)): a person must decide which login the customer keeps"))
            }
        }
        let allRemovable = a.removableUsers
        for (id, customer) in a.customers.sorted(by: { TenantAccounts.number($0.key.rawValue) < TenantAccounts.number($1.key.rawValue) }) {
            guard let uid = customer.userId, a.users[uid]?.customerId != id else { continue }
            // A user that names this customer is reported above (one that goes, this link follows).
            if (a.usersByCustomer[id] ?? []).contains(where: { !allRemovable.contains($0) }) { continue }
            let text = "customer \(tenant)/\(id) names user \(uid), which does not link back"
            if a.users[uid] == nil {
                var unlinked = customer
                findings.append(Finding(text: text + " (there is no such user); repair removes the link, so the customer can be given a login again") {
                    unlinked.userId = nil
                    try transaction.commit([try self.write(unlinked, self.customerFile(id, tenant))])
                })
            } else {
                findings.append(Finding(text: text + ": a person must decide"))
            }
        }
        return findings
    }
}
