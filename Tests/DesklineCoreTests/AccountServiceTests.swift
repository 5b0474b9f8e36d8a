@testable import DesklineCore
import Testing

struct AccountServiceTests {
    @Test func customerLoginMustUseTheCustomerRecordsEmail() async throws {
        let (accounts, _) = try await makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Ann", email: "ann@acme.test", phone: nil)
        await #expect(throws: DesklineError.self) {
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
        let (accounts, store) = try await makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Ann", email: "ann@acme.test", phone: "+1 555 0101")
        let user = try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil,
                                                 role: .customer, customer: customer.id, password: "long enough")
        let reloaded = try #require(try await store.customer(customer.id, in: tenant.id))
        #expect(reloaded.userId == user.id)
        // A second login for the same customer is refused.
        await #expect(throws: DesklineError.self) {
            try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil,
                                          role: .customer, customer: customer.id, password: "long enough")
        }
    }

    @Test func customerRoleNeedsACustomerAndStaffMustNotHaveOne() async throws {
        let (accounts, _) = try await makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Ann", email: "ann@acme.test", phone: nil)
        await #expect(throws: DesklineError.invalidArgument("a customer login needs the customer record it belongs to (--customer ID)")) {
            try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil, role: .customer,
                                          customer: nil, password: "long enough")
        }
        await #expect(throws: DesklineError.self) {
            try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil, role: .agent,
                                          customer: customer.id, password: "long enough")
        }
    }

    @Test func emailIsUniqueWithinATenantButNotAcrossTenants() async throws {
        let (accounts, _) = try await makeAccounts()
        let a = try await accounts.createTenant(id: "acme", name: "Acme")
        let b = try await accounts.createTenant(id: "globex", name: "Globex")
        _ = try await accounts.createUser(in: a.id, email: "sam@x.test", displayName: "Sam", role: .agent, customer: nil, password: "password-a")
        await #expect(throws: DesklineError.self) {
            try await accounts.createUser(in: a.id, email: "Sam@X.test", displayName: "Sam", role: .admin, customer: nil, password: "password-a")
        }
        _ = try await accounts.createUser(in: b.id, email: "sam@x.test", displayName: "Sam", role: .agent, customer: nil, password: "password-b")
    }

    @Test func loginBindsTenantUserRoleAndCustomer() async throws {
        let (accounts, _) = try await makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Ann", email: "ann@acme.test", phone: nil)
        let user = try await accounts.createUser(in: tenant.id, email: "ann@acme.test", displayName: nil,
                                                 role: .customer, customer: customer.id, password: "pass with spaces")
        let scope = try await accounts.login("ann@acme.test", password: "pass with spaces")
        #expect(scope == SessionScope(tenantId: tenant.id, userId: user.id, role: .customer, customerId: customer.id))
    }

    @Test func unknownEmailWrongPasswordAndUnknownTenantFailTheSameWay() async throws {
        let (accounts, _) = try await makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        _ = try await accounts.createUser(in: tenant.id, email: "amy@acme.test", displayName: "Amy", role: .agent, customer: nil, password: "right password")
        for (login, password) in [("amy@acme.test", "wrong password"), ("nobody@acme.test", "right password"),
                                  ("nope/amy@acme.test", "right password"), ("not an email", "x"), ("../../etc/passwd", "x")] {
            await #expect(throws: DesklineError.loginFailed) { try await accounts.login(login, password: password) }
        }
    }

    @Test func emailInSeveralTenantsNeedsTheTenantPrefix() async throws {
        let (accounts, _) = try await makeAccounts()
        let a = try await accounts.createTenant(id: "acme", name: "Acme")
        let b = try await accounts.createTenant(id: "globex", name: "Globex")
        _ = try await accounts.createUser(in: a.id, email: "sam@x.test", displayName: "Sam", role: .agent, customer: nil, password: "password-a")
        _ = try await accounts.createUser(in: b.id, email: "sam@x.test", displayName: "Sam", role: .admin, customer: nil, password: "password-b")
        await #expect(throws: DesklineError.loginFailed) { try await accounts.login("sam@x.test", password: "password-a") }
        #expect(try await accounts.login("acme/sam@x.test", password: "password-a").role == .agent)
        #expect(try await accounts.login("globex/SAM@x.test", password: "password-b").role == .admin)
        await #expect(throws: DesklineError.loginFailed) { try await accounts.login("globex/sam@x.test", password: "password-a") }
    }

    @Test func operatorCanResetAPassword() async throws {
        let (accounts, _) = try await makeAccounts()
        let tenant = try await accounts.createTenant(id: "acme", name: "Acme")
        _ = try await accounts.createUser(in: tenant.id, email: "amy@acme.test", displayName: "Amy", role: .agent, customer: nil, password: "old password")
        try await accounts.setPassword(in: tenant.id, email: "amy@acme.test", password: "new password")
        await #expect(throws: DesklineError.loginFailed) { try await accounts.login("amy@acme.test", password: "old password") }
        _ = try await accounts.login("amy@acme.test", password: "new password")
    }

    @Test func demoSeedCreatesThreeWorkingLoginsOnlyOnce() async throws {
        let (accounts, _) = try await makeAccounts()
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
        #expect(try InputRules.newPassword("eight ch") == "eight ch")
    }

    @Test func identifiersCannotEscapeTheirDirectory() {
        for bad in ["", "..", ".", "a/b", "a\u{0}b", "../acme", "Acme", "-acme", String(repeating: "a", count: 65)] {
            #expect(TenantID(rawValue: bad) == nil, "\(bad) accepted")
        }
        #expect(TenantID(rawValue: "acme-2_b") != nil)
    }
}
