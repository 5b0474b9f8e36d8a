import DesklineCore
import Foundation
import ArgumentParser

extension Deskline {
    struct Tenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage tenants (companies).",
            subcommands: [Add.self, List.self, Motd.self]
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

extension Deskline.Tenant {
    struct Motd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set, show or remove a tenant's message of the day (IRC clients show it after logging in).",
            discussion: "Without --text, --file or --clear, prints the current one. A running server shows the new one at the next IRC login.")

        @OptionGroup var options: DataOptions
        @Argument(help: "Tenant id.")
        var id: String
        @Option(help: "The message; \\n in a shell string does not make a new line: use --file for several lines.")
        var text: String?
        @Option(help: "Read the message from this file (- for standard input).")
        var file: String?
        @Flag(help: "Remove the message of the day.")
        var clear = false

        func validate() throws {
            if [text != nil, file != nil, clear].filter(\.self).count > 1 {
                throw ValidationError("use one of --text, --file and --clear")
            }
        }

        func run() async throws {
            let tenantID = try TenantID(validating: id)
            if text == nil, file == nil, !clear {
                let ctx = try await AdminContext.open(options)
                guard let tenant = try await ctx.store.tenant(tenantID) else { throw DesklineError.notFound("no tenant \(id)") }
                await ctx.finish(tenant.motd ?? "(no message of the day)", changed: false)
                return
            }
            var message = text
            if let file {
                let data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: file)
                guard let data, let read = String(data: data, encoding: .utf8) else {
                    throw ValidationError("cannot read \(file) as UTF-8 text")
                }
                message = read
            }
            let ctx = try await AdminContext.open(options)
            let tenant = try await ctx.accounts.setMOTD(of: tenantID, to: clear ? nil : message)
            await ctx.finish(tenant.motd.map { "message of the day of \(tenant.id) set (\($0.split(separator: "\n", omittingEmptySubsequences: false).count) lines)" }
                             ?? "message of the day of \(tenant.id) removed")
        }
    }
}
