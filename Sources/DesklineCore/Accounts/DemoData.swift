/// The demo tenant `deskline serve --demo` creates on an empty data directory, so a newcomer can
/// log in with netcat right away.
public enum DemoData {
    public struct Credential: Sendable, Equatable {
        public var role: Role
        public var email: String
        public var password: String
    }

    public static let tenantID = "demo"

    /// Creates the demo tenant with one customer, one agent and one admin, each with a freshly
    /// generated password. Returns nil (and changes nothing) if the data directory has any tenant.
    public static func seedIfEmpty(_ accounts: AccountService) async throws(DesklineError) -> [Credential]? {
        guard try await accounts.store.tenants().isEmpty else { return nil }
        let tenant = try await accounts.createTenant(id: tenantID, name: "Demo Company")
        let customer = try await accounts.createCustomer(in: tenant.id, name: "Carla Customer",
                                                         email: "carla@demo.example", phone: "+1 555 0100")
        var credentials: [Credential] = []
        for (role, email, name, customerId) in [
            (Role.customer, customer.email, customer.name, Optional(customer.id)),
            (.agent, "alex@demo.example", "Alex Agent", nil),
            (.admin, "ada@demo.example", "Ada Admin", nil),
        ] {
            let password = PasswordGenerator.make()
            _ = try await accounts.createUser(in: tenant.id, email: email, displayName: name, role: role,
                                              customer: customerId, password: password)
            credentials.append(Credential(role: role, email: email, password: password))
        }
        return credentials
    }
}

/// Random, typable passwords: four groups of four characters without look-alikes (`0/O`, `1/l`).
public enum PasswordGenerator {
    public static func make() -> String {
        let alphabet = Array("abcdefghijkmnpqrstuvwxyz23456789")
        var rng = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String((0..<4).map { _ in alphabet.randomElement(using: &rng)! }) }
            .joined(separator: "-")
    }
}
