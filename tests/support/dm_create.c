/* dm-create: userspace stand-in for the kernel's dm-init (dm-mod.create=) in a test initramfs.
 *
 * The Debian cloud kernel builds device-mapper as a module, and dm-init (which parses
 * dm-mod.create= at boot) only exists when it is built in. The test initramfs loads dm-mod and
 * dm-verity, then runs this program, which reads the same dm-mod.create= value from
 * /proc/cmdline and makes the device with the device-mapper ioctls (DM_DEV_CREATE,
 * DM_TABLE_LOAD, DM_DEV_SUSPEND to resume), as dm-init does. One device, one table line:
 *   dm-mod.create="<name>,<uuid>,<minor>,<flags ro|rw>,<start> <length> <type> <args>"
 * Static, no libdevmapper. Waits up to 30 s for the /dev paths named in the table.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* From linux/dm-ioctl.h (kept here: musl's include path has no kernel headers). */
#define DM_NAME_LEN 128
#define DM_UUID_LEN 129
#define DM_MAX_TYPE_NAME 16
struct dm_ioctl {
    uint32_t version[3];
    uint32_t data_size;
    uint32_t data_start;
    uint32_t target_count;
    int32_t open_count;
    uint32_t flags;
    uint32_t event_nr;
    uint32_t padding;
    uint64_t dev;
    char name[DM_NAME_LEN];
    char uuid[DM_UUID_LEN];
    char data[7];
};
struct dm_target_spec {
    uint64_t sector_start;
    uint64_t length;
    int32_t status;
    uint32_t next;
    char target_type[DM_MAX_TYPE_NAME];
};
#define DM_IOCTL 0xfd
#define DM_DEV_CREATE _IOWR(DM_IOCTL, 3, struct dm_ioctl)
#define DM_DEV_SUSPEND _IOWR(DM_IOCTL, 6, struct dm_ioctl)
#define DM_TABLE_LOAD _IOWR(DM_IOCTL, 9, struct dm_ioctl)
#define DM_READONLY_FLAG (1 << 0)

static void die(const char *what) {
    fprintf(stderr, "dm-create: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void init_io(struct dm_ioctl *io, size_t size, const char *name) {
    memset(io, 0, size);
    io->version[0] = 4;
    io->data_size = size;
    io->data_start = sizeof(struct dm_ioctl);
    snprintf(io->name, sizeof io->name, "%s", name);
}

int main(void) {
    static char cmdline[8192], buf[16384];
    FILE *f = fopen("/proc/cmdline", "r");
    if (!f || !fgets(cmdline, sizeof cmdline, f)) die("/proc/cmdline");
    char *v = strstr(cmdline, "dm-mod.create=");
    if (!v) { fprintf(stderr, "dm-create: no dm-mod.create= on the command line\n"); return 1; }
    v += strlen("dm-mod.create=");
    char *end;
    if (*v == '"') { v++; end = strchr(v, '"'); } else end = strpbrk(v, " \n");
    if (end) *end = 0;
    /* name,uuid,minor,flags,table */
    char *field[5];
    for (int i = 0; i < 4; i++) {
        field[i] = v;
        v = strchr(v, ',');
        if (!v) { fprintf(stderr, "dm-create: malformed dm-mod.create\n"); return 1; }
        *v++ = 0;
    }
    field[4] = v;
    if (strchr(field[4], ',') || strchr(field[4], ';')) {
        fprintf(stderr, "dm-create: only one device with one table line is supported\n");
        return 1;
    }
    unsigned long long start, length;
    char type[DM_MAX_TYPE_NAME];
    int n = 0;
    if (sscanf(field[4], "%llu %llu %15s %n", &start, &length, type, &n) != 3) {
        fprintf(stderr, "dm-create: malformed table '%s'\n", field[4]);
        return 1;
    }
    const char *params = field[4] + n;

    /* wait for the devices the table names */
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", params);
    for (char *t = strtok(copy, " "); t; t = strtok(NULL, " ")) {
        if (strncmp(t, "/dev/", 5)) continue;
        struct stat st;
        for (int i = 0; i < 300 && stat(t, &st); i++) usleep(100000);
        if (stat(t, &st)) { fprintf(stderr, "dm-create: no device %s\n", t); return 1; }
    }

    int fd = open("/dev/mapper/control", O_RDWR);
    if (fd < 0) die("/dev/mapper/control (is dm-mod loaded?)");
    struct dm_ioctl *io = (struct dm_ioctl *)buf;
    init_io(io, sizeof *io, field[0]);
    snprintf(io->uuid, sizeof io->uuid, "%s", field[1]);
    if (ioctl(fd, DM_DEV_CREATE, io)) die("DM_DEV_CREATE");

    init_io(io, sizeof buf, field[0]);
    io->target_count = 1;
    if (!strcmp(field[3], "ro")) io->flags |= DM_READONLY_FLAG;
    struct dm_target_spec *spec = (struct dm_target_spec *)(buf + sizeof *io);
    spec->sector_start = start;
    spec->length = length;
    snprintf(spec->target_type, sizeof spec->target_type, "%s", type);
    char *p = (char *)(spec + 1);
    size_t room = sizeof buf - (size_t)(p - buf);
    if (strlen(params) + 1 > room) { fprintf(stderr, "dm-create: table too long\n"); return 1; }
    strcpy(p, params);
    if (ioctl(fd, DM_TABLE_LOAD, io)) die("DM_TABLE_LOAD");

    init_io(io, sizeof *io, field[0]);
    if (ioctl(fd, DM_DEV_SUSPEND, io)) die("DM_DEV_SUSPEND (resume)");
    printf("dm-create: %s ready (%s %s, %llu sectors)\n", field[0], type, field[3], length);
    return 0;
}
