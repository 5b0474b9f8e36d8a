import DesklineCore
import Foundation
import Testing

/// Tenants, customers and logins: the same behaviour from every backend.
struct AccountConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func aTenantIsCreatedOnceAndListedById(_ kind: StoreKind) async throws {
        let store = try await kind.make()
        let created = Date(timeIntervalSince1970: 1_700_000_000.123_456)
        for id in ["globex", "acme"] {
            try await store.createTenant(Tenant(id: TenantID(rawValue: id)!, name: id.capitalized, createdAt: created))
        }
        await #expect(throws: DesklineError.conflict("tenant acme already exists")) {
            try await store.createTenant(Tenant(id: TenantID(rawValue: "acme")!, name: "Other", createdAt: created))
        }
        #expect(try await store.tenants().map(\.id.rawValue) == ["acme", "globex"])
        let acme = try #require(try await store.tenant(TenantID(rawValue: "acme")!))
        #expect(acme.name == "Acme")
        #expect(acme.createdAt == Timestamp.truncate(created))
        #expect(try await store.tenant(TenantID(rawValue: "initech")!) == nil)
    }

    @Test(arguments: StoreKind.allCases)
    func aTenantsNameAndMOTDAreUpdatedInPlace(_ kind: StoreKind) async throws {
        let store = try await kind.make()
        let created = Date(timeIntervalSince1970: 1_700_000_000)
        try await store.createTenant(Tenant(id: TenantID(rawValue: "acme")!, name: "Acme", createdAt: created))
        let changed = Tenant(id: TenantID(rawValue: "acme")!, name: "Acme Inc", createdAt: .now, motd: "Hello\nagents")
        #expect(try await store.updateTenant(changed) == Tenant(id: changed.id, name: "Acme Inc", createdAt: created, motd: "Hello\nagents"))
        #expect(try await store.tenant(changed.id)?.motd == "Hello\nagents")
        await #expect(throws: DesklineError.notFound("no tenant initech")) {
            try await store.updateTenant(Tenant(id: TenantID(rawValue: "initech")!, name: "I", createdAt: created))
        }
        #expect(try await store.tenants().count == 1)
    }

    @Test(arguments: StoreKind.allCases)
    func customersAndUsersAreNumberedPerTenant(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        // Seeded: acme c1, c2 with logins u1, u2 and agent u3; globex c1 with u1.
        let acmeUsers = try await w.store.users(in: w.acme)
        #expect(acmeUsers.map(\.id) == [w.ann, w.bob, w.amy])
        #expect(try await w.store.users(in: w.globex).map(\.email) == ["gus@x.test"])
        let time = Date(timeIntervalSince1970: 1_700_000_000.987_654)
        let carl = try await w.store.createCustomer(NewCustomer(name: "Carl", email: "carl@x.test", phone: nil), in: w.acme, at: time)
        #expect(carl.id == .numbered(3))
        #expect(carl.createdAt == Timestamp.truncate(time))
        #expect(carl.status == .active && carl.userId == nil)
        #expect(try await w.store.customer(carl.id, in: w.acme) == carl)
        #expect(try await w.store.customer(carl.id, in: w.globex) == nil)
        let sue = try await w.store.createUser(w.newUser("sue", .admin), in: w.globex, at: time)
        #expect(sue.id == .numbered(2))
        #expect(sue.tenantId == w.globex && sue.role == .admin && sue.customerId == nil)
        #expect(sue.createdAt == Timestamp.truncate(time))
        #expect(try await w.store.user(sue.id, in: w.globex) == sue)
        #expect(try await w.store.storedUser(sue.id, in: w.globex) == sue)
        // Ids are per tenant: u2 in acme is Bob.
        #expect(try await w.store.user(sue.id, in: w.acme)?.email == "bob@x.test")
        #expect(try await w.store.user(.numbered(9), in: w.acme) == nil)
        #expect(try await w.store.staff(in: w.acme) == Staff(acmeUsers))
        #expect(try await w.store.staff(in: w.acme).agents == [w.amy])

        let nowhere = TenantID(rawValue: "initech")!
        await #expect(throws: DesklineError.notFound("no tenant initech")) {
            try await w.store.createCustomer(NewCustomer(name: "X", email: "x@x.test", phone: nil), in: nowhere, at: time)
        }
        await #expect(throws: DesklineError.notFound("no tenant initech")) {
            try await w.store.createUser(w.newUser("x", .agent), in: nowhere, at: time)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func emailsAreUniqueWithinATenantAndARefusedCreateTakesNoNumber(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        await #expect(throws: DesklineError.conflict("tenant acme already has a login amy@x.test")) {
            try await w.store.createUser(w.newUser("amy", .admin), in: w.acme, at: w.now)
        }
        await #expect(throws: DesklineError.conflict("tenant acme already has a customer with email ann@x.test (c1)")) {
            try await w.store.createCustomer(NewCustomer(name: "Ann 2", email: "ann@x.test", phone: nil), in: w.acme, at: w.now)
        }
        // The same email in another tenant is another account.
        let amyAtGlobex = try await w.store.createUser(w.newUser("amy", .agent), in: w.globex, at: w.now)
        #expect(amyAtGlobex.id == .numbered(2))
        // The refused creates took no number.
        #expect(try await w.store.createUser(w.newUser("sam", .agent), in: w.acme, at: w.now).id == .numbered(4))
        let carl = try await w.store.createCustomer(NewCustomer(name: "Carl", email: "carl@x.test", phone: nil), in: w.acme, at: w.now)
        #expect(carl.id == .numbered(3))
    }

    @Test(arguments: StoreKind.allCases)
    func aCustomerLoginIsLinkedBothWaysAndThereIsOnlyOne(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let ann = try #require(try await w.store.user(w.ann, in: w.acme))
        #expect(ann.customerId == w.annC && ann.role == .customer)
        #expect(try await w.store.customer(w.annC, in: w.acme)?.userId == w.ann)
        let carl = try await w.store.createCustomer(NewCustomer(name: "Carl", email: "carl@x.test", phone: nil), in: w.acme, at: w.now)
        #expect(try await w.store.customer(carl.id, in: w.acme)?.userId == nil)
        await #expect(throws: DesklineError.conflict("customer c1 already has a login (user u1)")) {
            try await w.store.createUser(w.newUser("ann2", .customer, customer: w.annC), in: w.acme, at: w.now)
        }
        await #expect(throws: DesklineError.notFound("no customer c9 in tenant acme")) {
            try await w.store.createUser(w.newUser("nine", .customer, customer: .numbered(9)), in: w.acme, at: w.now)
        }
        let login = try await w.store.createUser(w.newUser("carl", .customer, customer: carl.id), in: w.acme, at: w.now)
        #expect(login.id == .numbered(4))
        #expect(try await w.store.customer(carl.id, in: w.acme)?.userId == login.id)
    }

    @Test(arguments: StoreKind.allCases)
    func accountsWithAnEmailAreFoundInEveryTenant(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let amyAtGlobex = try await w.store.createUser(w.newUser("amy", .admin), in: w.globex, at: w.now)
        #expect(try await w.store.accounts(withEmail: "amy@x.test") == [AccountRef(tenantId: w.acme, userId: w.amy),
                                                                        AccountRef(tenantId: w.globex, userId: amyAtGlobex.id)])
        #expect(try await w.store.accounts(withEmail: "gus@x.test") == [AccountRef(tenantId: w.globex, userId: .numbered(1))])
        #expect(try await w.store.accounts(withEmail: "nobody@x.test") == [])
    }

    @Test(arguments: StoreKind.allCases)
    func aPasswordHashIsReplacedOnlyIfItIsStillTheExpectedOne(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let old = World.hash("amy")
        #expect(try await w.store.setPasswordHash(World.hash("upgrade"), for: w.amy, in: w.acme, ifCurrent: World.hash("stale")) == false)
        #expect(try await w.store.storedUser(w.amy, in: w.acme)?.passwordHash == old)
        #expect(try await w.store.setPasswordHash(World.hash("upgrade"), for: w.amy, in: w.acme, ifCurrent: old) == true)
        #expect(try await w.store.storedUser(w.amy, in: w.acme)?.passwordHash == World.hash("upgrade"))
        #expect(try await w.store.setPasswordHash(World.hash("reset"), for: w.amy, in: w.acme, ifCurrent: nil) == true)
        #expect(try await w.store.storedUser(w.amy, in: w.acme)?.passwordHash == World.hash("reset"))
        #expect(try await w.store.user(w.amy, in: w.acme)?.passwordHash == World.hash("reset"))
        await #expect(throws: DesklineError.notFound("no user u9 in tenant acme")) {
            try await w.store.setPasswordHash(old, for: .numbered(9), in: w.acme, ifCurrent: nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aCustomerAndItsLoginChangeTogetherOrNotAtAll(_ kind: StoreKind) async throws {
        let w = try await kind.seeded()
        let renamed = try await w.store.updateCustomer(w.annC, in: w.acme) { customer, user in
            customer.name = "Ann B."
            user?.displayName = "Ann B."
        }
        #expect(renamed.name == "Ann B.")
        #expect(try await w.store.customer(w.annC, in: w.acme)?.name == "Ann B.")
        #expect(try await w.store.storedUser(w.ann, in: w.acme)?.displayName == "Ann B.")
        await #expect(throws: DesklineError.conflict("refused")) {
            try await w.store.updateCustomer(w.annC, in: w.acme) { customer, user throws(DesklineError) in
                customer.name = "Changed"
                user?.displayName = "Changed"
                throw .conflict("refused")
            }
        }
        #expect(try await w.store.customer(w.annC, in: w.acme)?.name == "Ann B.")
        #expect(try await w.store.storedUser(w.ann, in: w.acme)?.displayName == "Ann B.")
        // A customer without a login is changed alone.
        let carl = try await w.store.createCustomer(NewCustomer(name: "Carl", email: "carl@x.test", phone: nil), in: w.acme, at: w.now)
        let phoned = try await w.store.updateCustomer(carl.id, in: w.acme) { customer, user in
            #expect(user == nil)
            customer.phone = "+1 555 0199"
        }
        #expect(try await w.store.customer(carl.id, in: w.acme) == phoned)
        await #expect(throws: DesklineError.notFound("no customer c9 in tenant acme")) {
            try await w.store.updateCustomer(.numbered(9), in: w.acme) { _, _ in }
        }
    }
}
