# Installs the Shoumi agent as a Windows service, silently, and enrolls it with a token:
#   powershell -ExecutionPolicy AllSigned -File install-agent.ps1 -Collector collector.corp:7444 `
#       -Token se_... -CaFingerprint 3f9a... [-Source .\shoumi-agent-windows.zip]
# Sign this script with the company's code-signing certificate before deploying it (Set-AuthenticodeSignature).
# The service runs as LocalSystem, starts at boot, restarts on every failure, and employees cannot stop it
# without administrator rights. NOT VERIFIED on Windows by this project's CI (no Windows machine): the
# service definition it uses is generated and unit-tested (installers/service_definitions.py).
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$Collector,
    [Parameter(Mandatory = $true)][string]$Token,
    [Parameter(Mandatory = $true)][string]$CaFingerprint,
    [string]$Source = (Join-Path $PSScriptRoot 'shoumi-agent-windows.zip')
)
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'service-definition.ps1')

if (-not ([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()).IsInRole(
        [Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Write-Error 'install-agent.ps1: run as administrator'; exit 2
}
$InstallDir = Split-Path (Split-Path (Split-Path $AgentExe))
Expand-Archive -Path $Source -DestinationPath $InstallDir -Force
New-Item -ItemType Directory -Force -Path $StateDir | Out-Null
# only SYSTEM and Administrators may read the agent's identity and spool
icacls $StateDir /inheritance:r /grant:r 'SYSTEM:(OI)(CI)F' 'Administrators:(OI)(CI)F' | Out-Null
if (-not (Test-Path $ConfigPath)) { Copy-Item (Join-Path $InstallDir 'agent.toml.example') $ConfigPath }

if (-not (Test-Path (Join-Path $StateDir 'agent.json'))) {
    & $AgentExe enroll --collector $Collector --token $Token --ca-fingerprint $CaFingerprint --state-dir $StateDir
    if ($LASTEXITCODE -ne 0) {
        # installed all the same: the service retries nothing by itself here, so say exactly what to do
        Write-Warning "install-agent.ps1: enrollment failed (exit $LASTEXITCODE); fix the token/fingerprint and run install-agent.ps1 again"
    }
}
if (-not (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue)) {
    New-Service -Name $ServiceName -BinaryPathName $BinaryPath -DisplayName $DisplayName `
        -Description $Description -StartupType Automatic | Out-Null
}
sc.exe failure $ServiceName reset= $FailureReset actions= $FailureActions | Out-Null
# employees may query the service but neither stop nor reconfigure it
sc.exe sdset $ServiceName 'D:(A;;CCLCSWLOCRRC;;;AU)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;SY)' | Out-Null
Start-Service -Name $ServiceName
Write-Output "Shoumi agent installed and started ($ServiceName)"
