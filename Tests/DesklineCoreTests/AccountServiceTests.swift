@testable import DesklineCore
import Testing

struct AccountServiceTests {
    @Test func customerLoginMustUseTheCustomerRecordsEmail() async throws {
        let (accounts, _) = makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Ann", email: "ann@acme.test", phone: nil)
        await #expect(throws: DesklineError.invalidArgument("email someone.else@acme.test does not match customer c1's email ann@acme.test; a customer login must use the customer record's email")) {
            try await accounts.createUser(in: tenant.id, email: "someone.else@acme.test", displayName: nil,
                                          role: .customer, customer: customer.id, password: "long enough")
        }
        let user = try await accounts.createUser(in: tenant.id, email: "ANN@acme.test", displayName: nil,
                                                 role: .customer, customer: customer.id, password: "long enough")
        #expect(user.email == "ann@acme.test")
        #expect(user.displayName == "Ann")
        #expect(user.customerId == customer.id)
    }

    @Test func customerAndUserAreLinkedBothWays() async throws {
        let (accounts, store) = makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Ann", email: "ann@acme.test", phone: "+1 555 0101")
        let user = try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil,
                                                 role: .customer, customer: customer.id, password: "long enough")
        let reloaded = try #require(try await store.customer(customer.id, in: tenant.id))
        #expect(reloaded.userId == user.id)
        // A second login for the same customer is refused (here by the email rule first; the
        // store's own one-login-per-customer rule is tested in the store conformance suite).
        await #expect(throws: DesklineError.conflict("tenant acme already has a login ann@acme.test")) {
            try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil,
                                          role: .customer, customer: customer.id, password: "long enough")
        }
    }

    @Test func customerRoleNeedsACustomerAndStaffMustNotHaveOne() async throws {
        let (accounts, _) = makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Ann", email: "ann@acme.test", phone: nil)
        await #expect(throws: DesklineError.invalidArgument("a customer login needs the customer record it belongs to (--customer ID)")) {
            try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil, role: .customer,
                                          customer: nil, password: "long enough")
        }
        await #expect(throws: DesklineError.invalidArgument("only customer logins belong to a customer record; drop --customer for role agent")) {
            try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil, role: .agent,
                                          customer: customer.id, password: "long enough")
        }
    }

    @Test func emailIsUniqueWithinATenantButNotAcrossTenants() async throws {
        let (accounts, _) = makeAccounts()
        let a = try await accounts.createTenant(id: "acme", name: "Acme")
        let b = try await accounts.createTenant(id: "globex", name: "Globex")
        _ = try await accounts.createUser(in: a.id, email: "sam@x.test", displayName: "Sam", role: .agent, customer: nil, password: "password-a")
        await #expect(throws: DesklineError.conflict("tenant acme already has a login sam@x.test")) {
            try await accounts.createUser(in: a.id, email: "Sam@X.test", displayName: "Sam", role: .admin, customer: nil, password: "password-a")
        }
        _ = try await accounts.createUser(in: b.id, email: "sam@x.test", displayName: "Sam", role: .agent, customer: nil, password: "password-b")
    }

    @Test func loginBindsTenantUserRoleAndCustomer() async throws {
        let (accounts, _) = makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Ann", email: "ann@acme.test", phone: nil)
        let user = try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil,
                                                 role: .customer, customer: customer.id, password: "pass with spaces")
        let scope = try await accounts.login("ann@acme.test", password: "pass with spaces")
        #expect(scope == SessionScope(tenantId: tenant.id, userId: user.id, role: .customer, customerId: customer.id))
    }

    @Test func unknownEmailWrongPasswordAndUnknownTenantFailTheSameWay() async throws {
        let (accounts, _) = makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        _ = try await accounts.createUser(in: tenant.id, email: "amy@acme.test", displayName: "Amy", role: .agent, customer: nil, password: "right password")
        for (login, password) in [("amy@acme.test", "wrong password"), ("nobody@acme.test", "right password"),
                                  ("nope/amy@acme.test", "right password"), ("not an email", "x"), ("../../etc/passwd", "x")] {
            await #expect(throws: DesklineError.loginFailed) { try await accounts.login(login, password: password) }
        }
    }

    @Test func emailInSeveralTenantsNeedsTheTenantPrefix() async throws {
        let (accounts, _) = makeAccounts()
        let a = try await accounts.createTenant(id: "acme", name: "Acme")
        let b = try await accounts.createTenant(id: "globex", name: "Globex")
        _ = try await accounts.createUser(in: a.id, email: "sam@x.test", displayName: "Sam", role: .agent, customer: nil, password: "password-a")
        _ = try await accounts.createUser(in: b.id, email: "sam@x.test", displayName: "Sam", role: .admin, customer: nil, password: "password-b")
        await #expect(throws: DesklineError.loginFailed) { try await accounts.login("sam@x.test", password: "password-a") }
        #expect(try await accounts.login("acme/sam@x.test", password: "password-a").role == .agent)
        #expect(try await accounts.login("globex/SAM@x.test", password: "password-b").role == .admin)
        #expect(try await accounts.login("GLOBEX/sam@x.test", password: "password-b").role == .admin)
        await #expect(throws: DesklineError.loginFailed) { try await accounts.login("globex/sam@x.test", password: "password-a") }
    }

    @Test func everyLoginCostsExactlyOnePasswordDerivation() async throws {
        let (setup, store) = makeAccounts()
        let a = try await setup.createTenant(id: "acme", name: "Acme")
        let b = try await setup.createTenant(id: "globex", name: "Globex")
        _ = try await setup.createUser(in: a.id, email: "sam@x.test", displayName: "Sam", role: .agent, customer: nil, password: "password-a")
        _ = try await setup.createUser(in: b.id, email: "sam@x.test", displayName: "Sam", role: .agent, customer: nil, password: "password-b")
        _ = try await setup.createUser(in: a.id, email: "amy@x.test", displayName: "Amy", role: .agent, customer: nil, password: "password-c")
        // Unknown email, unknown tenant, ambiguous email, malformed login, wrong password, success:
        // each must do the same work, one derivation at the configured cost.
        for (login, password) in [("nobody@x.test", "x"), ("nope/amy@x.test", "x"), ("sam@x.test", "password-a"),
                                  ("../etc", "x"), ("amy@x.test", "wrong"), ("amy@x.test", "password-c")] {
            let counter = CountingExecutor()
            let accounts = AccountService(store: store, hasher: PasswordHasher(cost: testCost), passwordWork: counter)
            _ = try? await accounts.login(login, password: password)
            #expect(counter.runs == 1, "\(login): \(counter.runs) derivations")
        }
    }

    @Test func loginUpgradesAHashMadeWithAnotherCost() async throws {
        let (old, store) = makeAccounts()
        let tenant = try await old.createTenant(id: "acme", name: "Acme")
        let user = try await old.createUser(in: tenant.id, email: "amy@x.test", displayName: "Amy", role: .agent, customer: nil, password: "password-c")
        #expect(user.passwordHash.n == 1024)
        let raised = PasswordHashingCost(n: 2048, r: 8, p: 1)
        let accounts = AccountService(store: store, hasher: PasswordHasher(cost: raised), passwordWork: InlineExecutor())
        _ = try await accounts.login("amy@x.test", password: "password-c")
        let upgraded = try #require(try await store.user(user.id, in: tenant.id))
        #expect(upgraded.passwordHash.n == 2048)
        _ = try await accounts.login("amy@x.test", password: "password-c")
        // Lowering the setting again keeps the stronger hash.
        let lowered = AccountService(store: store, hasher: PasswordHasher(cost: testCost), passwordWork: InlineExecutor())
        _ = try await lowered.login("amy@x.test", password: "password-c")
        #expect(try await store.user(user.id, in: tenant.id)?.passwordHash == upgraded.passwordHash)
    }

    @Test func operatorCanResetAPassword() async throws {
        let (accounts, _) = makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        _ = try await accounts.createUser(in: tenant.id, email: "amy@acme.test", displayName: "Amy", role: .agent, customer: nil, password: "old password")
        try await accounts.setPassword(in: tenant.id, email: "amy@acme.test", password: "new password")
        await #expect(throws: DesklineError.loginFailed) { try await accounts.login("amy@acme.test", password: "old password") }
        _ = try await accounts.login("amy@acme.test", password: "new password")
    }

    @Test func demoSeedCreatesThreeWorkingLoginsOnlyOnce() async throws {
        let (accounts, _) = makeAccounts()
        let credentials = try #require(try await DemoData.seedIfEmpty(accounts))
        #expect(credentials.map(\.role) == [.customer, .agent, .admin])
        for c in credentials {
            #expect(try await accounts.login(c.email, password: c.password).role == c.role)
        }
        #expect(try await DemoData.seedIfEmpty(accounts) == nil)
    }
}

struct InputRulesTests {
    @Test func emailsAreNormalisedAndChecked() throws {
        #expect(try InputRules.email("  Ann@Example.COM ") == "ann@example.com")
        for bad in ["", "ann", "@x", "ann@", "a b@x.y", "a@b@c", "acme/ann@x.y", "ann\u{0}@x.y"] {
            #expect(throws: DesklineError.self) { try InputRules.email(bad) }
        }
    }

    @Test func passwordsNeedEightBytesAndNoControlCharacters() throws {
        #expect(throws: DesklineError.self) { try InputRules.newPassword("short") }
        #expect(throws: DesklineError.self) { try InputRules.newPassword("has\u{1B}[2Jescape") }
        #expect(throws: DesklineError.invalidArgument("passwords may not start or end with a space")) { try InputRules.newPassword(" padded pass ") }
        #expect(try InputRules.newPassword("eight ch") == "eight ch")
    }

    @Test func identifiersCannotEscapeTheirDirectory() {
        for bad in ["", "..", ".", "a/b", "a\u{0}b", "../acme", "Acme", "-acme", String(repeating: "a", count: 65)] {
            #expect(TenantID(rawValue: bad) == nil, "\(bad) accepted")
        }
        #expect(TenantID(rawValue: "acme-2_b") != nil)
    }
}
