/*
 * conda_solve: a small libsolv driver used as a benchmark peer for envstore's
 * rattler-based solver.  See README.md next to this file.
 *
 * Usage:
 *   conda_solve --subdir SUBDIR
 *               [--channel DIR]... [--repodata PATH]...
 *               [--virtual NAME=VERSION=BUILD]... [--repeat N] [--verbose]
 *               -- SPEC...
 *
 *   --repodata PATH  a conda repodata.json.  Its channel is the grandparent
 *                    directory of PATH (<channel>/<subdir>/repodata.json), so
 *                    <channel>/SUBDIR/repodata.json and
 *                    <channel>/noarch/repodata.json form ONE priority level.
 *   --channel DIR    shorthand for --repodata DIR/SUBDIR/repodata.json
 *                    --repodata DIR/noarch/repodata.json (a missing file is
 *                    skipped).
 *   Channel priority is the order in which channels first appear on the
 *   command line (first = highest).
 *   --virtual        a virtual package (e.g. __glibc=2.28=0), put into the
 *                    "installed" repo the way mamba does.
 *   --repeat N       solve N times (fresh Solver, same Pool) and report the
 *                    median.  Before every solve after the first the
 *                    whatprovides index is rebuilt (untimed) so that each
 *                    solve re-evaluates the conda matchspecs from scratch,
 *                    like the first one does.
 *
 * Output: one JSON line on stdout:
 *   {"tool":"libsolv","load_ms":..,"solve_ms":..,"solve_runs_ms":[..],
 *    "packages":N,"problems":null|"...","installed":["name-version-build",..]}
 * Exit status: 0 solved, 1 unsolvable (problems != null), 2 usage/load error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <solv/pool.h>
#include <solv/poolarch.h>
#include <solv/repo.h>
#include <solv/repodata.h>
#include <solv/solver.h>
#include <solv/solverdebug.h>
#include <solv/transaction.h>
#include <solv/conda.h>
#include <solv/repo_conda.h>
#include <solv/solvversion.h>

#ifndef LIBSOLV_FEATURE_CONDA
#error "libsolv was built without ENABLE_CONDA"
#endif

struct input {
  char *path;     /* as given */
  char *channel;  /* canonical channel directory */
  int chanidx;    /* index into channels[] */
};

static void die(const char *fmt, const char *arg) {
  fprintf(stderr, "conda_solve: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  exit(2);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void usage(void) {
  fprintf(stderr,
          "usage: conda_solve --subdir SUBDIR [--channel DIR]... [--repodata PATH]...\n"
          "                   [--virtual NAME=VERSION=BUILD]... [--repeat N] [--verbose]\n"
          "                   -- SPEC...\n");
  exit(2);
}

/* canonical channel dir of <channel>/<subdir>/repodata.json */
static char *channel_of_repodata(const char *path) {
  char buf[PATH_MAX];
  char *slash;
  int up;
  if (!realpath(path, buf))
    die("cannot resolve repodata path %s", path);
  for (up = 0; up < 2; up++) {
    slash = strrchr(buf, '/');
    if (!slash)
      die("cannot derive channel directory from %s", path);
    if (slash == buf)
      slash[1] = 0;
    else
      *slash = 0;
  }
  return strdup(buf);
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", f);
    else if (c == '\t')
      fputs("\\t", f);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

int main(int argc, char **argv) {
  const char *subdir = 0;
  struct input *inputs = 0;
  int ninputs = 0;
  char **virtuals = 0;
  int nvirtuals = 0;
  int repeat = 1, verbose = 0;
  char **specs = 0;
  int nspecs = 0;
  char **chans = 0;
  int nchans = 0;
  int i, j;

  /* ---- arguments ---------------------------------------------------- */
  /* --channel needs --subdir, which may come later: collect first. */
  char **order = 0; /* "c:" / "r:" prefixed, in command-line order */
  int norder = 0;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) {
      specs = argv + i + 1;
      nspecs = argc - i - 1;
      break;
    }
    if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
      verbose = 1;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help"))
      usage();
    if (i + 1 >= argc)
      usage();
    if (!strcmp(a, "--subdir"))
      subdir = argv[++i];
    else if (!strcmp(a, "--repodata") || !strcmp(a, "--channel")) {
      char *o = malloc(strlen(argv[i + 1]) + 3);
      sprintf(o, "%c:%s", a[2] == 'r' ? 'r' : 'c', argv[i + 1]);
      order = realloc(order, (norder + 1) * sizeof(char *));
      order[norder++] = o;
      i++;
    } else if (!strcmp(a, "--virtual")) {
      virtuals = realloc(virtuals, (nvirtuals + 1) * sizeof(char *));
      virtuals[nvirtuals++] = argv[++i];
    } else if (!strcmp(a, "--repeat")) {
      repeat = atoi(argv[++i]);
      if (repeat < 1)
        die("--repeat must be >= 1, got %s", argv[i]);
    } else
      die("unknown option %s", a);
  }
  if (!subdir)
    die("%s", "--subdir is required");
  if (!specs || nspecs == 0)
    die("%s", "no specs given (put them after --)");

  for (i = 0; i < norder; i++) {
    const char *val = order[i] + 2;
    char *paths[2];
    int np = 0;
    char *chan;
    if (order[i][0] == 'r') {
      paths[np++] = strdup(val);
      chan = channel_of_repodata(val);
    } else {
      char buf[PATH_MAX];
      if (!realpath(val, buf))
        die("cannot resolve channel directory %s", val);
      chan = strdup(buf);
      snprintf(buf, sizeof(buf), "%s/%s/repodata.json", chan, subdir);
      if (file_exists(buf))
        paths[np++] = strdup(buf);
      else
        fprintf(stderr, "conda_solve: warning: %s missing\n", buf);
      if (strcmp(subdir, "noarch") != 0) {
        snprintf(buf, sizeof(buf), "%s/noarch/repodata.json", chan);
        if (file_exists(buf))
          paths[np++] = strdup(buf);
        else
          fprintf(stderr, "conda_solve: warning: %s missing\n", buf);
      }
    }
    for (j = 0; j < nchans; j++)
      if (!strcmp(chans[j], chan))
        break;
    if (j == nchans) {
      chans = realloc(chans, (nchans + 1) * sizeof(char *));
      chans[nchans++] = chan;
    }
    for (int k = 0; k < np; k++) {
      inputs = realloc(inputs, (ninputs + 1) * sizeof(struct input));
      inputs[ninputs].path = paths[k];
      inputs[ninputs].channel = chans[j];
      inputs[ninputs].chanidx = j;
      ninputs++;
    }
  }
  if (ninputs == 0)
    die("%s", "no repodata given (--repodata or --channel)");

  /* ---- load --------------------------------------------------------- */
  double t0 = now_ms();
  Pool *pool = pool_create();
  pool_setdisttype(pool, DISTTYPE_CONDA);
  /* no pool_setarch(): conda solvables carry no arch, subdir filtering is
   * done by which repodata files we load. */

  /* virtual packages: an "installed" repo, as mamba does */
  Repo *installed = repo_create(pool, "installed");
  installed->priority = 0;
  {
    Repodata *data = repo_add_repodata(installed, 0);
    for (i = 0; i < nvirtuals; i++) {
      char *v = strdup(virtuals[i]);
      char *ver = strchr(v, '=');
      char *build = ver ? strchr(ver + 1, '=') : 0;
      if (!ver)
        die("--virtual wants NAME=VERSION[=BUILD], got %s", virtuals[i]);
      *ver++ = 0;
      if (build)
        *build++ = 0;
      Id p = repo_add_solvable(installed);
      Solvable *s = pool->solvables + p;
      s->name = pool_str2id(pool, v, 1);
      s->evr = pool_str2id(pool, ver, 1);
      s->provides = repo_addid_dep(installed, s->provides,
                                   pool_rel2id(pool, s->name, s->evr, REL_EQ, 1), 0);
      repodata_add_poolstr_array(data, p, SOLVABLE_BUILDFLAVOR, build ? build : "0");
      repodata_set_str(data, p, SOLVABLE_BUILDVERSION, "0");
      free(v);
    }
    repodata_internalize(data);
  }
  pool_set_installed(pool, installed);

  for (i = 0; i < ninputs; i++) {
    struct stat st;
    char label[PATH_MAX + 64];
    if (stat(inputs[i].path, &st) != 0)
      die("cannot stat %s", inputs[i].path);
    if (st.st_size == 0) {
      fprintf(stderr, "conda_solve: warning: %s is empty, skipped\n", inputs[i].path);
      continue;
    }
    FILE *fp = fopen(inputs[i].path, "r");
    if (!fp)
      die("cannot open %s", inputs[i].path);
    snprintf(label, sizeof(label), "%s", inputs[i].path);
    Repo *repo = repo_create(pool, label);
    /* strict channel priority: same priority for <channel>/<subdir> and
     * <channel>/noarch, higher for earlier channels; subpriority 0 for
     * both (as mamba does). */
    repo->priority = nchans - inputs[i].chanidx;
    repo->subpriority = 0;
    if (repo_add_conda(repo, fp, 0) != 0) {
      fprintf(stderr, "conda_solve: %s: %s\n", inputs[i].path, pool_errstr(pool));
      exit(2);
    }
    fclose(fp);
    if (verbose)
      fprintf(stderr, "conda_solve: loaded %s: %d solvables, priority %d (channel %s)\n",
              inputs[i].path, repo->nsolvables, repo->priority, inputs[i].channel);
  }
  pool_createwhatprovides(pool);
  double load_ms = now_ms() - t0;

  /* ---- jobs --------------------------------------------------------- */
  Queue job;
  queue_init(&job);
  for (i = 0; i < nspecs; i++) {
    Id dep = pool_conda_matchspec(pool, specs[i]);
    if (!dep)
      die("cannot parse matchspec '%s'", specs[i]);
    queue_push2(&job, SOLVER_INSTALL | SOLVER_SOLVABLE_PROVIDES, dep);
  }

  /* ---- solve (repeat) ----------------------------------------------- */
  double *runs = calloc(repeat, sizeof(double));
  char *problems = 0;
  char **names = 0;
  int nnames = 0;
  for (int r = 0; r < repeat; r++) {
    if (r > 0)
      pool_createwhatprovides(pool); /* untimed: drop cached matchspec providers */
    double s0 = now_ms();
    Solver *solv = solver_create(pool);
    /* mamba defaults (libmamba 2.x Request::Flags / micromamba install):
     * allow_downgrade, allow_uninstall, strict_repo_priority all true. */
    solver_set_flag(solv, SOLVER_FLAG_ALLOW_DOWNGRADE, 1);
    solver_set_flag(solv, SOLVER_FLAG_ALLOW_UNINSTALL, 1);
    solver_set_flag(solv, SOLVER_FLAG_STRICT_REPO_PRIORITY, 1);
    int nprob = solver_solve(solv, &job);
    Transaction *trans = nprob ? 0 : solver_create_transaction(solv);
    runs[r] = now_ms() - s0;

    if (r == repeat - 1) {
      if (nprob) {
        size_t len = 0;
        for (Id pid = 1; pid <= nprob; pid++) {
          const char *ps = solver_problem2str(solv, pid);
          size_t l = strlen(ps);
          problems = realloc(problems, len + l + 3);
          if (len) {
            memcpy(problems + len, "; ", 2);
            len += 2;
          }
          memcpy(problems + len, ps, l);
          len += l;
          problems[len] = 0;
        }
      } else {
        for (j = 0; j < trans->steps.count; j++) {
          Id p = trans->steps.elements[j];
          Solvable *s = pool->solvables + p;
          if (s->repo == installed)
            continue; /* erasure of an installed (virtual) package */
          const char *build = solvable_lookup_str(s, SOLVABLE_BUILDFLAVOR);
          const char *n = pool_id2str(pool, s->name);
          const char *v = pool_id2str(pool, s->evr);
          char *nvb = malloc(strlen(n) + strlen(v) + (build ? strlen(build) : 0) + 3);
          sprintf(nvb, "%s-%s-%s", n, v, build ? build : "");
          names = realloc(names, (nnames + 1) * sizeof(char *));
          names[nnames++] = nvb;
          if (verbose)
            fprintf(stderr, "  + %s  (%s)\n", nvb, s->repo->name);
        }
        for (j = 0; j < trans->steps.count; j++) {
          Solvable *s = pool->solvables + trans->steps.elements[j];
          if (s->repo == installed)
            fprintf(stderr, "conda_solve: warning: solution erases virtual package %s\n",
                    pool_solvable2str(pool, s));
        }
      }
    }
    if (trans)
      transaction_free(trans);
    solver_free(solv);
  }
  qsort(names, nnames, sizeof(char *), cmp_str);

  double *sorted = malloc(repeat * sizeof(double));
  memcpy(sorted, runs, repeat * sizeof(double));
  qsort(sorted, repeat, sizeof(double), cmp_double);
  double median = repeat % 2 ? sorted[repeat / 2]
                             : (sorted[repeat / 2 - 1] + sorted[repeat / 2]) / 2;

  /* ---- output ------------------------------------------------------- */
  printf("{\"tool\":\"libsolv\",\"load_ms\":%.3f,\"solve_ms\":%.3f,\"solve_runs_ms\":[",
         load_ms, median);
  for (i = 0; i < repeat; i++)
    printf("%s%.3f", i ? "," : "", runs[i]);
  printf("],\"packages\":%d,\"problems\":", nnames);
  if (problems)
    json_str(stdout, problems);
  else
    fputs("null", stdout);
  fputs(",\"installed\":[", stdout);
  for (i = 0; i < nnames; i++) {
    if (i)
      fputc(',', stdout);
    json_str(stdout, names[i]);
  }
  fputs("]}\n", stdout);

  queue_free(&job);
  pool_free(pool);
  return problems ? 1 : 0;
}
