/*
 * kata-ref-agent: the reference agent kata.osbuilder ships for demos and tests.
 *
 * It is NOT the Kata agent. It stands where /usr/bin/kata-agent stands and does what a
 * boot test needs to see from it:
 *   - as PID 1 (agent as init) it mounts /proc, /sys and /dev and takes /dev/console;
 *   - it prints one readiness line on the console:
 *       kata-ref-agent: READY pid=<pid> uptime=<seconds> root=<fstype>
 *   - kata_ref_agent.check=/a,/b on the kernel command line prints, for each path,
 *       kata-ref-agent: check <path> present|absent
 *   - kata_ref_agent.poweroff on the kernel command line powers the VM off after that
 *     (as the runtime asks the real agent to); otherwise it waits like an agent does.
 *
 * Build: musl-gcc -static -Os -s -o kata-ref-agent kata-ref-agent.c   (or gcc -static)
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

#define VERSION "1.0.0"

static char cmdline[8192];

static void read_file(const char *path, char *buf, size_t len)
{
	buf[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n > 0)
		buf[n] = '\0';
}

/* Value of key=value on the command line (or "" for a bare key); NULL when absent. */
static const char *cmdline_get(const char *key, char *out, size_t outlen)
{
	size_t klen = strlen(key);
	const char *p = cmdline;
	while (*p) {
		while (*p == ' ' || *p == '\n')
			p++;
		const char *start = p;
		while (*p && *p != ' ' && *p != '\n')
			p++;
		if ((size_t)(p - start) >= klen && strncmp(start, key, klen) == 0 &&
		    (start[klen] == '=' || start + klen == p)) {
			const char *v = start[klen] == '=' ? start + klen + 1 : p;
			size_t vlen = (size_t)(p - v);
			if (vlen >= outlen)
				vlen = outlen - 1;
			memcpy(out, v, vlen);
			out[vlen] = '\0';
			return out;
		}
	}
	return NULL;
}

static void setup_as_init(void)
{
	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

static void root_fstype(char *out, size_t len)
{
	static char mounts[65536];
	snprintf(out, len, "unknown");
	read_file("/proc/self/mounts", mounts, sizeof(mounts));
	/* The last mount on "/" is the one visible. */
	char *line = strtok(mounts, "\n");
	while (line) {
		char dev[256], mnt[256], type[64];
		if (sscanf(line, "%255s %255s %63s", dev, mnt, type) == 3 && strcmp(mnt, "/") == 0)
			snprintf(out, len, "%s", type);
		line = strtok(NULL, "\n");
	}
}

static void poweroff(void)
{
	sync();
	reboot(RB_POWER_OFF);
	/* Not allowed to (not root, or in a container): just leave. */
	_exit(0);
}

static void on_term(int sig)
{
	(void)sig;
	poweroff();
}

int main(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-v") == 0)) {
		printf("kata-ref-agent version " VERSION "\n");
		return 0;
	}
	if (getpid() == 1)
		setup_as_init();

	read_file("/proc/cmdline", cmdline, sizeof(cmdline));
	char uptime[64], fstype[64], val[4096];
	read_file("/proc/uptime", uptime, sizeof(uptime));
	char *sp = strchr(uptime, ' ');
	if (sp)
		*sp = '\0';
	root_fstype(fstype, sizeof(fstype));

	printf("kata-ref-agent: READY pid=%d uptime=%s root=%s\n", (int)getpid(), uptime, fstype);
	fflush(stdout);

	if (cmdline_get("kata_ref_agent.check", val, sizeof(val))) {
		char *path = strtok(val, ",");
		while (path) {
			struct stat st;
			printf("kata-ref-agent: check %s %s\n", path,
			       stat(path, &st) == 0 ? "present" : "absent");
			path = strtok(NULL, ",");
		}
		fflush(stdout);
	}

	if (cmdline_get("kata_ref_agent.poweroff", val, sizeof(val))) {
		printf("kata-ref-agent: powering off\n");
		fflush(stdout);
		poweroff();
	}

	signal(SIGTERM, on_term);
	for (;;)
		pause();
}
