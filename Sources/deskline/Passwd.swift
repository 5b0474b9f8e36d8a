import ArgumentParser
import DesklineCore

extension Deskline {
    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a login's password. The password is read from the terminal, or from the first line of stdin.")

        @OptionGroup var options: DataOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Login email.") var email: String

        func run() async throws {
            let ctx = try await AdminContext.open(options)
            let tenantID = try TenantID(validating: tenant)
            let password = try PasswordInput.read(prompt: "New password")
            try await ctx.accounts.setPassword(in: tenantID, email: email, password: password)
            await ctx.finish("password changed for \(email) in tenant \(tenantID)")
        }
    }
}
