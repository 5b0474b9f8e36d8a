import ArgumentParser
import DesklineCore

extension Deskline {
    struct User: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage logins.",
            subcommands: [Add.self]
        )
    }
}

extension Deskline.User {
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a login. The password is read from the terminal, or from the first line of stdin.",
            discussion: """
            A customer login belongs to a customer record (--customer) and must use that record's email.
            Agent and admin logins belong to no customer record.
            """)

        @OptionGroup var options: DataOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Login email (unique within the tenant).") var email: String
        @Option(help: "customer, agent or admin.") var role: Role
        @Option(help: "Customer record id (role customer only), as printed by `customer add`.") var customer: String?
        @Option(help: "Display name (default: the customer's name, or the email's local part).") var name: String?

        func run() async throws {
            let ctx = try await AdminContext.open(options)
            let customerID = try customer.map { (c) throws(DesklineError) in try CustomerID(validating: c) }
            let tenantID = try TenantID(validating: tenant)
            // Check the cheap rules before asking for a password.
            if role == .customer, let customerID {
                guard let record = try await ctx.store.customer(customerID, in: tenantID) else {
                    throw DesklineError.notFound("no customer \(customerID) in tenant \(tenantID)")
                }
                guard record.email == (try InputRules.email(email)) else {
                    throw DesklineError.invalidArgument("email \(email) does not match customer \(customerID)'s email \(record.email); a customer login must use the customer record's email")
                }
            }
            let password = try PasswordInput.read(prompt: "Password")
            let user = try await ctx.accounts.createUser(in: tenantID, email: email, displayName: name, role: role,
                                                         customer: customerID, password: password)
            var message = "created \(user.role.rawValue) login \(user.email) (user \(user.id)) in tenant \(user.tenantId)"
            // (A login a tenant's admin made answers only <tenant>/<email>: it does not count.)
            let elsewhere = try await ctx.accounts.bareEmailLogins(user.email).filter { $0.tenantId != user.tenantId }
            if !elsewhere.isEmpty {
                let tenants = elsewhere.map(\.tenantId.rawValue).sorted().joined(separator: ", ")
                message += "\nnote: \(user.email) also has a login in tenant(s) \(tenants); from now on all of them must log in as <tenant>/\(user.email)"
            }
            await ctx.finish(message, whenServing: "the login works at once; the server's lists of agents and admins include it within a second.")
        }
    }
}
