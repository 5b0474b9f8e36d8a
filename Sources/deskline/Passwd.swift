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
            // (LOGIN and PASSWD read the stored password, never a kept copy: Store.storedUser.)
            await ctx.finish("password changed for \(email) in tenant \(tenantID)",
                             whenServing: "the new password counts from the next LOGIN, and the old one no longer does. "
                                 + "Sessions already logged in stay connected until they log out or the server restarts.")
        }
    }
}
