import ArgumentParser
import DesklineCore

extension Deskline {
    struct Customer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage customer records.",
            subcommands: [Add.self]
        )
    }
}

extension Deskline.Customer {
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a customer record. Give it a login afterwards with `user add --role customer`.")

        @OptionGroup var options: DataOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Customer name.") var name: String
        @Option(help: "Customer email; their login must use the same one.") var email: String
        @Option(help: "Phone number (used for call requests).") var phone: String?

        func run() async throws {
            let ctx = try await AdminContext.open(options)
            let customer = try await ctx.accounts.createCustomer(in: try TenantID(validating: tenant), name: name,
                                                                 email: email, phone: phone)
            await ctx.finish("created customer \(customer.id) (\(customer.name) <\(customer.email)>) in tenant \(customer.tenantId)")
        }
    }
}
