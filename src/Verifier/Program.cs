using Sandbox.Audited.Verifier;

return VerifyCommand.Run(args, Console.Out);
