import ArgumentParser

@main
struct Deskline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deskline",
        abstract: "Deskline: a multi-tenant helpdesk gateway speaking a line protocol over TCP.",
        subcommands: [Serve.self, Migrate.self, Tenant.self, Customer.self, User.self, Passwd.self, Check.self, Export.self, Import.self]
    )
}
