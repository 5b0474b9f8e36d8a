import ArgumentParser

extension Deskline {
    struct Tenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage tenants (companies).",
            subcommands: [Add.self, List.self]
        )
    }
}

extension Deskline.Tenant {
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant.")

        @OptionGroup var options: DataOptions
        @Argument(help: "Tenant id: 1-64 of a-z 0-9 - _, e.g. acme. Used in LOGIN <tenant>/<email>.")
        var id: String
        @Option(help: "The company's display name.")
        var name: String

        func run() async throws {
            let ctx = try await AdminContext.open(options, create: true)
            let tenant = try await ctx.accounts.createTenant(id: id, name: name)
            await ctx.finish("created tenant \(tenant.id) (\(tenant.name))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")

        @OptionGroup var options: DataOptions

        func run() async throws {
            let ctx = try await AdminContext.open(options)
            let tenants = try await ctx.store.tenants()
            await ctx.finish(tenants.map { "\($0.id)\t\($0.name)" }.joined(separator: "\n"), changed: false)
        }
    }
}
